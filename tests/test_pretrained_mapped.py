"""from_pretrained zero-copy on CPU: parameters view the mapped checkpoint, prefaulted, private, as transformers 5."""
from __future__ import annotations

import hashlib
import os
import re

import pytest
import torch

pytest.importorskip("transformers")
import transformers  # noqa: E402

from warpload.formats.checkpoint import checkpoint_records  # noqa: E402
from conftest import mapping_of, needs_proc_maps, same_bits  # noqa: E402
from model_checkpoints import FORMATS, left_padded_prompts, save_checkpoint, tiny_transformers_model  # noqa: E402
from warpload import AutoModelForCausalLM
from warpload._native import core
from warpload.engine import mapped
from warpload.errors import CheckpointError, ZeroCopyError  # noqa: E402
from warpload.plan import TensorRecord  # noqa: E402

WEIGHT_SUFFIXES = (".safetensors", ".bin")


def backing_files(model: torch.nn.Module) -> set[str]:
    """The files the parameters' memory maps ("" for anonymous memory, "[heap]" included)."""
    paths = {mapping_of(p.data_ptr())[0] for p in model.parameters() if p.numel()}
    return {"" if path.startswith("[") else path for path in paths}


def digest(folder) -> dict[str, str]:
    return {name: hashlib.sha256((folder / name).read_bytes()).hexdigest()
            for name in sorted(os.listdir(folder)) if name.endswith(WEIGHT_SUFFIXES)}


def logits(model: torch.nn.Module) -> torch.Tensor:
    ids, _ = left_padded_prompts()
    with torch.no_grad():
        return model(ids[:1]).logits


@pytest.fixture(scope="module")
def gpt2_checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("mapped")
    return {fmt: save_checkpoint(tiny_transformers_model("gpt2"), root / fmt, fmt) for fmt in FORMATS}


@needs_proc_maps
@pytest.mark.parametrize("backend", ["warpload", "transformers"])
@pytest.mark.parametrize("fmt", FORMATS)
def test_mapped_parameters_view_the_checkpoint_and_match_owned_and_transformers(gpt2_checkpoints, fmt, backend):
    folder = gpt2_checkpoints[fmt]
    ours = AutoModelForCausalLM.from_pretrained(folder, backend=backend)
    owned = AutoModelForCausalLM.from_pretrained(folder, backend=backend, zero_copy=False)
    reference = transformers.AutoModelForCausalLM.from_pretrained(folder)

    weight_files = {os.fspath(folder / name) for name in os.listdir(folder) if name.endswith(WEIGHT_SUFFIXES)}
    assert backing_files(ours) <= weight_files
    assert backing_files(owned).isdisjoint(weight_files)
    assert same_bits(logits(ours), logits(owned))
    torch.testing.assert_close(logits(ours), logits(reference), rtol=0, atol=1e-5)
    ours_state, reference_state = ours.state_dict(), reference.state_dict()
    assert list(ours_state) == list(reference_state)
    for name, tensor in reference_state.items():
        assert same_bits(ours_state[name], tensor), name
    # transformers 5's mapped parameters are trainable leaves; ours too.
    assert [(n, p.requires_grad, p.is_leaf) for n, p in ours.named_parameters()] == \
        [(n, p.requires_grad, p.is_leaf) for n, p in reference.named_parameters()]


@needs_proc_maps
@pytest.mark.parametrize("backend", ["warpload", "transformers"])
@pytest.mark.parametrize("fmt", ["safetensors", "bin"])
@pytest.mark.parametrize("arch", ["gpt2", "qwen3"])
def test_tied_embeddings_stay_one_mapped_parameter(tmp_path, arch, fmt, backend):
    folder = save_checkpoint(tiny_transformers_model(arch), tmp_path / arch, fmt)
    model = AutoModelForCausalLM.from_pretrained(folder, backend=backend)
    embeddings = model.get_input_embeddings().weight
    assert model.get_output_embeddings().weight is embeddings
    assert mapping_of(embeddings.data_ptr())[0].endswith(WEIGHT_SUFFIXES)
    reference = transformers.AutoModelForCausalLM.from_pretrained(folder)
    torch.testing.assert_close(logits(model), logits(reference), rtol=0, atol=1e-5)


@needs_proc_maps
def test_prefault_maps_every_page_during_the_load(gpt2_checkpoints):
    folder = gpt2_checkpoints["safetensors"]
    model = AutoModelForCausalLM.from_pretrained(folder)
    path, start, end = mapping_of(model.transformer.wte.weight.data_ptr())
    assert path == os.fspath(folder / "model.safetensors")
    with open("/proc/self/smaps") as handle:
        lines = handle.read().splitlines()
    region = next(i for i, line in enumerate(lines) if line.startswith(f"{start:x}-{end:x} "))
    rss_kb = next(int(line.split()[1]) for line in lines[region + 1:] if line.startswith("Rss:"))
    # Nothing has touched the parameters yet: only the prefault can have mapped the pages.
    tensor_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    assert rss_kb * 1024 >= tensor_bytes


def test_writes_to_mapped_parameters_stay_private(gpt2_checkpoints):
    folder = gpt2_checkpoints["safetensors"]
    before = digest(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, zero_copy=True)
    original = model.transformer.h[0].mlp.c_fc.weight.detach().clone()
    with torch.no_grad():
        model.transformer.h[0].mlp.c_fc.weight.add_(1.0)
    assert torch.equal(model.transformer.h[0].mlp.c_fc.weight, original + 1.0)
    assert digest(folder) == before
    again = AutoModelForCausalLM.from_pretrained(folder)
    assert torch.equal(again.transformer.h[0].mlp.c_fc.weight, original)


@pytest.mark.parametrize("backend", ["warpload", "transformers"])
@pytest.mark.parametrize("fmt", ["safetensors", "bin"])
def test_mapped_model_saves_and_loads_back(gpt2_checkpoints, tmp_path, fmt, backend):
    from safetensors.torch import save_model

    model = AutoModelForCausalLM.from_pretrained(gpt2_checkpoints[fmt], backend=backend)
    out = tmp_path / "saved"
    if backend == "transformers":
        model.save_pretrained(out)
    else:
        model.config.save_pretrained(out)
        save_model(model, os.fspath(out / "model.safetensors"))  # drops one name of each tied pair
    reloaded, info = transformers.AutoModelForCausalLM.from_pretrained(out, output_loading_info=True)
    assert info["missing_keys"] == info["unexpected_keys"] == set()
    assert same_bits(logits(model), logits(reloaded))


@needs_proc_maps
def test_conversion_falls_back_to_owned_copies(gpt2_checkpoints):
    folder = gpt2_checkpoints["safetensors"]
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.bfloat16)
    assert model.dtype == torch.bfloat16
    assert backing_files(model) == {""}
    reference = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.bfloat16)
    assert same_bits(logits(model), logits(reference))


def test_zero_copy_true_with_a_conversion_names_the_tensor(gpt2_checkpoints):
    with pytest.raises(ZeroCopyError, match=r"tensor 'transformer\.\S+' of .*model\.safetensors.*stored as F32 and "
                                            r"the model wants torch\.bfloat16"):
        AutoModelForCausalLM.from_pretrained(gpt2_checkpoints["safetensors"], dtype="bfloat16", zero_copy=True)


def test_unaligned_and_transposed_records_are_not_mapped():
    aligned = TensorRecord("w", "F32", (2, 2), "/x", 64, 16)
    assert mapped.why_not_mapped(aligned, torch.float32, "cpu") is None
    assert "offset 66" in mapped.why_not_mapped(TensorRecord("w", "F32", (2, 2), "/x", 66, 16), torch.float32, "cpu")
    assert "transposed" in mapped.why_not_mapped(TensorRecord("w", "F32", (2, 2), "/x", 64, 16, transpose=True),
                                                 torch.float32, "cpu")
    assert "cuda:0" in mapped.why_not_mapped(aligned, torch.float32, torch.device("cuda", 0))


def test_legacy_bin_loads_unaligned_tensors_as_copies(tmp_path):
    reference = tiny_transformers_model("gpt2")
    folder = tmp_path / "legacy"
    reference.config.save_pretrained(folder)
    torch.save(reference.state_dict(), folder / "pytorch_model.bin", _use_new_zipfile_serialization=False)
    model = AutoModelForCausalLM.from_pretrained(folder)
    assert same_bits(logits(model), logits(reference))


@needs_proc_maps
@pytest.mark.parametrize(("env", "mapped_expected"), [("0", False), ("auto", True)])
def test_environment_sets_the_default(gpt2_checkpoints, monkeypatch, env, mapped_expected):
    monkeypatch.setenv("WARPLOAD_ZERO_COPY", env)
    model = AutoModelForCausalLM.from_pretrained(gpt2_checkpoints["safetensors"])
    assert (backing_files(model) != {""}) is mapped_expected


def test_invalid_zero_copy_values_are_refused(gpt2_checkpoints, monkeypatch):
    with pytest.raises(ValueError, match="zero_copy='yes'"):
        AutoModelForCausalLM.from_pretrained(gpt2_checkpoints["safetensors"], zero_copy="yes")
    monkeypatch.setenv("WARPLOAD_ZERO_COPY", "sometimes")
    with pytest.raises(ValueError, match="WARPLOAD_ZERO_COPY='sometimes'"):
        AutoModelForCausalLM.from_pretrained(gpt2_checkpoints["safetensors"])


@pytest.mark.parametrize("use_madvise", [True, False], ids=["populate_read", "touch"])
def test_prefault_reads_ranges_and_checks_bounds(tmp_path, use_madvise):
    path = tmp_path / "data"
    path.write_bytes(os.urandom(3 << 20))
    file = core().File(os.fspath(path))
    populated = core().prefault([file], [(0, 100, 2 << 20), (0, (2 << 20) + 5000, 1000)], 2, use_madvise)
    kernel = tuple(int(part) for part in re.match(r"(\d+)\.(\d+)", os.uname().release).groups())
    assert populated is (use_madvise and kernel >= (5, 14))
    message = r"cannot map 4096 bytes at offset 3141634, the file has 3145728"
    with pytest.raises(CheckpointError, match=message) as caught:
        core().prefault([file], [(0, (3 << 20) - 4096 + 2, 4096)], 0, use_madvise)
    assert (caught.value.path, caught.value.offset) == (os.fspath(path), 3141634)


def test_gpu_targets_keep_the_engine_path(gpt2_checkpoints):
    path = os.fspath(gpt2_checkpoints["safetensors"] / "model.safetensors")
    record = next(r for r in checkpoint_records(path) if r.dtype == "F32")
    gpu = torch.device("cuda", 0)
    assert mapped.map_records({"w": record}, {"w": torch.float32}, gpu, mapped.AUTO) == {}
    with pytest.raises(ZeroCopyError, match=f"tensor '{re.escape(record.name)}' .* loaded to cuda:0"):
        mapped.map_records({"w": record}, {"w": torch.float32}, gpu, mapped.REQUIRED)


@needs_proc_maps
def test_auto_copies_cold_files_and_maps_warm_ones(gpt2_checkpoints):
    folder = gpt2_checkpoints["safetensors"]
    weights = os.fspath(folder / "model.safetensors")

    core().evict_from_page_cache(weights)
    if core().File(weights).resident_fraction() >= mapped.constants.MAP_WARM_FRACTION:
        pytest.skip("this file system keeps the file cached through POSIX_FADV_DONTNEED")
    assert backing_files(AutoModelForCausalLM.from_pretrained(folder)) == {""}

    core().evict_from_page_cache(weights)
    assert backing_files(AutoModelForCausalLM.from_pretrained(folder, zero_copy=True)) == {weights}

    # The load above read the whole file: warm now, so auto maps it.
    assert backing_files(AutoModelForCausalLM.from_pretrained(folder)) == {weights}
