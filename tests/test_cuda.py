"""Loading straight to a real GPU: bit-exact with safetensors, conversions, shards, ring limits, from_pretrained.

Skipped without CUDA (the fake-runtime tests in test_cuda_pipeline.py cover the pipeline's logic
on any machine); on a GPU machine run `pytest tests/test_cuda.py -v`.
"""
from __future__ import annotations

import os
import random

import pytest
import torch
from safetensors.torch import load_file as st_load_file
from safetensors.torch import save_file

from conftest import SAVEABLE_DTYPES, random_tensor, same_bits
from warpload import constants, load_checkpoint, load_file, safe_open
from warpload.engine import cuda
from warpload.errors import CudaUnavailableError

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason="needs a CUDA GPU (torch.cuda.is_available() is False); the pipeline's logic "
                                       "is tested against a fake runtime in test_cuda_pipeline.py")
MIB = 1 << 20


@pytest.fixture
def pipeline_calls(monkeypatch):
    """Counts loads that went through cuda.materialize, so a test fails if routing falls back to CPU + .to()."""
    calls = []
    original = cuda.materialize

    def spy(*args, **kwargs):
        calls.append(args[1])
        return original(*args, **kwargs)

    monkeypatch.setattr(cuda, "materialize", spy)
    return calls


def assert_same_on_device(loaded, expected, device="cuda:0"):
    assert set(loaded) == set(expected)
    for name, tensor in expected.items():
        assert loaded[name].device == torch.device(device), name
        assert same_bits(loaded[name].cpu(), tensor.cpu()), name


def small_ring(monkeypatch, buffer_mb: int, buffers: int) -> None:
    monkeypatch.setenv(constants.ENV_CUDA_BUFFER_MB, str(buffer_mb))
    monkeypatch.setenv(constants.ENV_CUDA_BUFFERS, str(buffers))


@pytest.mark.parametrize("dtype", SAVEABLE_DTYPES, ids=str)
def test_every_dtype_is_bit_exact_with_safetensors_cuda(tmp_path, dtype, pipeline_calls):
    tensors = {f"t{i}": random_tensor(shape, dtype, seed=i)
               for i, shape in enumerate([(3, 5), (1,), (0, 4), (257, 3), (2, 2, 2), ()])}
    path = os.fspath(tmp_path / "model.safetensors")
    save_file(tensors, path)
    assert_same_on_device(load_file(path, device="cuda"), st_load_file(path, device="cuda"))
    assert pipeline_calls == ["cuda"]


@pytest.mark.parametrize("device", ["cuda", "cuda:0", 0, torch.device("cuda", 0)], ids=str)
def test_device_spellings(tmp_path, device, pipeline_calls):
    path = os.fspath(tmp_path / "model.safetensors")
    save_file({"w": torch.randn(10, 3)}, path)
    assert_same_on_device(load_file(path, device=device), st_load_file(path))
    assert len(pipeline_calls) == 1


@pytest.mark.parametrize("source", [torch.float32, torch.float16, torch.bfloat16, torch.float64,
                                    torch.float8_e4m3fn, torch.float8_e5m2], ids=str)
@pytest.mark.parametrize("target", [torch.float32, torch.float16, torch.bfloat16], ids=str)
def test_conversion_on_the_device_matches_torch(tmp_path, source, target):
    tensors = {"a": torch.randn(300, 70).to(source), "ids": torch.arange(11), "b": torch.randn(5).to(source)}
    path = os.fspath(tmp_path / "model.safetensors")
    save_file(tensors, path)
    expected = {n: t.cuda().to(target) if t.is_floating_point() else t for n, t in st_load_file(path).items()}
    assert_same_on_device(load_file(path, device="cuda", dtype=target), expected)


def test_sharded_checkpoint_and_safe_open(tmp_path, pipeline_calls):
    from huggingface_hub import save_torch_state_dict

    state = {f"layers.{i}.w": torch.randn(256 + i, 512).to(torch.bfloat16) for i in range(16)}
    save_torch_state_dict(state, tmp_path, max_shard_size="1MB")
    assert len(list(tmp_path.glob("*.safetensors"))) > 4
    assert_same_on_device(load_checkpoint(tmp_path, device="cuda:0"), state)
    shard = sorted(tmp_path.glob("*.safetensors"))[0]
    with safe_open(shard, "pt", device="cuda:0") as handle:
        name = handle.keys()[0]
        assert same_bits(handle.get_tensor(name).cpu(), state[name])


def test_tensor_far_larger_than_the_ring(tmp_path, monkeypatch):
    small_ring(monkeypatch, buffer_mb=1, buffers=2)
    tensors = {"head": torch.randn(7), "huge": random_tensor((48 * MIB,), torch.uint8, seed=3), "tail": torch.randn(9)}
    path = os.fspath(tmp_path / "big.safetensors")
    save_file(tensors, path)
    assert_same_on_device(load_file(path, device="cuda"), tensors)


def test_thousands_of_tiny_tensors(tmp_path):
    rng = random.Random(0)
    dtypes = [torch.float32, torch.bfloat16, torch.int8, torch.int64, torch.bool]
    tensors = {f"t{i}": random_tensor((rng.randint(0, 40),), rng.choice(dtypes), seed=i) for i in range(5000)}
    path = os.fspath(tmp_path / "tiny.safetensors")
    save_file(tensors, path)
    assert_same_on_device(load_file(path, device="cuda"), tensors)


def test_two_ranks_plans_in_a_row_on_one_gpu(tmp_path):
    """Two checkpoints (as two GPUs' shards would be) loaded one after the other, both kept alive."""
    first = {f"rank0.{i}": torch.randn(1000, 100 + i).half() for i in range(8)}
    second = {f"rank1.{i}": torch.randn(1000, 50 + i).bfloat16() for i in range(8)}
    save_file(first, os.fspath(tmp_path / "rank0.safetensors"))
    save_file(second, os.fspath(tmp_path / "rank1.safetensors"))
    a = load_file(tmp_path / "rank0.safetensors", device="cuda")
    b = load_file(tmp_path / "rank1.safetensors", device="cuda")
    assert_same_on_device(a, first)
    assert_same_on_device(b, second)


def test_memory_freed_by_queued_kernels_is_not_overwritten(tmp_path):
    """The allocator may hand the load memory that kernels queued on torch's stream still write."""
    tensors = {"w": torch.randn(4 * MIB)}
    path = os.fspath(tmp_path / "m.safetensors")
    save_file(tensors, path)
    for _ in range(5):
        scratch = torch.empty(4 * MIB + 16, device="cuda")
        for _ in range(50):
            scratch.fill_(7.0)  # queued, still running when the memory is freed
        del scratch
        assert_same_on_device(load_file(path, device="cuda"), tensors)


def test_callers_current_device_is_kept(tmp_path):
    if torch.cuda.device_count() < 2:
        pytest.skip("needs two GPUs to load onto one that is not current")
    path = os.fspath(tmp_path / "m.safetensors")
    save_file({"w": torch.randn(10)}, path)
    torch.cuda.set_device(0)
    loaded = load_file(path, device="cuda:1")
    assert loaded["w"].device == torch.device("cuda:1")
    assert torch.cuda.current_device() == 0


def test_bad_runtime_path_raises_cuda_unavailable(tmp_path, monkeypatch):
    path = os.fspath(tmp_path / "m.safetensors")
    save_file({"w": torch.randn(10)}, path)
    monkeypatch.setenv(constants.ENV_CUDA_RUNTIME, os.fspath(tmp_path / "libcudart.so.0"))
    with pytest.raises(CudaUnavailableError, match="no CUDA runtime could be loaded"):
        load_file(path, device="cuda")


def test_runtime_found_without_configuration(monkeypatch):
    monkeypatch.delenv(constants.ENV_CUDA_RUNTIME, raising=False)
    torch.zeros(1, device="cuda")  # torch's runtime is loaded and initialised
    path, count = cuda.runtime_info()
    assert "libcudart" in path and count == torch.cuda.device_count()


def test_stress_loop_load_compare_repeat(tmp_path, monkeypatch):
    """Load, compare, repeat with small rings and random content: a buffer refilled before its copy
    finished would show as wrong bytes in some round."""
    rng = random.Random(7)
    for round_index in range(30):
        small_ring(monkeypatch, buffer_mb=rng.choice([1, 2, 4]), buffers=rng.choice([1, 2, 3, 8]))
        monkeypatch.setenv(constants.ENV_READ_METHOD, rng.choice(["auto", "mmap", "pread"]))
        tensors = {f"t{i}": random_tensor((rng.choice([0, 1, 33, 4096, 300_000, 3 * MIB]),),
                                          rng.choice([torch.uint8, torch.float16, torch.int32]), seed=round_index + i)
                   for i in range(rng.choice([1, 5, 50]))}
        path = os.fspath(tmp_path / f"s{round_index}.safetensors")
        save_file(tensors, path)
        assert_same_on_device(load_file(path, device="cuda"), tensors)
        os.unlink(path)


@pytest.mark.parametrize("device_map", ["cuda", {"": 0}, 0, "cuda:0"], ids=str)
def test_from_pretrained_fills_parameters_on_the_gpu(tmp_path, device_map, monkeypatch):
    pytest.importorskip("transformers")
    from model_checkpoints import save_checkpoint, tiny_transformers_model
    from warpload import AutoModelForCausalLM

    folder = save_checkpoint(tiny_transformers_model("llama"), tmp_path / "llama", "safetensors-sharded")
    filled = []
    original = cuda.fill_tensors
    monkeypatch.setattr(cuda, "fill_tensors", lambda pairs, **kw: (filled.append(len(pairs)), original(pairs, **kw)))
    on_gpu = AutoModelForCausalLM.from_pretrained(folder, device_map=device_map)
    on_cpu = AutoModelForCausalLM.from_pretrained(folder)
    assert filled and filled[0] > 0
    gpu_state, cpu_state = on_gpu.state_dict(), on_cpu.state_dict()
    assert set(gpu_state) == set(cpu_state)
    for key, tensor in cpu_state.items():
        assert gpu_state[key].device.type == "cuda", key
        assert same_bits(gpu_state[key].cpu(), tensor), key


def test_from_pretrained_converts_on_the_gpu(tmp_path):
    pytest.importorskip("transformers")
    from model_checkpoints import save_checkpoint, tiny_transformers_model
    from warpload import AutoModelForCausalLM

    folder = save_checkpoint(tiny_transformers_model("gpt2"), tmp_path / "gpt2", "safetensors", torch.float32)
    on_gpu = AutoModelForCausalLM.from_pretrained(folder, device_map="cuda", dtype=torch.bfloat16)
    on_cpu = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.bfloat16)
    for key, tensor in on_cpu.state_dict().items():
        assert same_bits(on_gpu.state_dict()[key].cpu(), tensor), key


def test_tensorflow_checkpoint_is_transposed_on_the_gpu(pipeline_calls):
    from conftest import FIXTURES

    folder = FIXTURES / "tf" / "tf1_gpt2_ckpt"
    reference = st_load_file(os.fspath(FIXTURES / "tf" / "pt_gpt2model_from_tf1" / "model.safetensors"))
    assert_same_on_device(load_checkpoint(folder, device="cuda", from_tf=True), reference)
    assert pipeline_calls
