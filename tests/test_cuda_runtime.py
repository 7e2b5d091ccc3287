"""The C++ pipeline on a real GPU without a CUDA build of torch: device memory from libcudart itself, via ctypes.

Runs wherever a libcudart loads and sees a GPU (torch's, a CUDA toolkit's, or WARPLOAD_CUDA_RUNTIME),
so the ring, streams and events are checked on hardware even where only CPU torch is installed.
"""
from __future__ import annotations

import ctypes
import glob
import os
import random

import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import random_tensor, same_bits
from warpload import constants, engine
from warpload.engine import cuda
from warpload.errors import CudaUnavailableError
from warpload.formats.safetensors import read_header
from warpload.plan import plan_load

MIB = 1 << 20
MEMCPY_DEVICE_TO_HOST = 2


class DeviceMemory:
    """cudaMalloc'd bytes, read back with cudaMemcpy."""

    def __init__(self, lib: ctypes.CDLL, nbytes: int) -> None:
        self.lib, self.nbytes = lib, nbytes
        self.pointer = ctypes.c_void_p()
        assert lib.cudaMalloc(ctypes.byref(self.pointer), max(nbytes, 1)) == 0

    def read(self) -> torch.Tensor:
        out = torch.empty(self.nbytes, dtype=torch.uint8)
        assert self.lib.cudaMemcpy(ctypes.c_void_p(out.data_ptr()), self.pointer, self.nbytes,
                                   MEMCPY_DEVICE_TO_HOST) == 0
        return out

    def free(self) -> None:
        self.lib.cudaFree(self.pointer)


@pytest.fixture(scope="module")
def runtime():
    tried = []
    for candidate in cuda.runtime_candidates() + sorted(glob.glob("/usr/local/cuda*/lib64/libcudart.so*")):
        try:
            path, _ = cuda.runtime_info(candidate)
        except CudaUnavailableError as err:
            tried.append(str(err).splitlines()[0])
            continue
        if "fake" in os.path.basename(path):  # test_cuda_pipeline.py's, still mapped in this process
            continue
        lib = ctypes.CDLL(path)
        lib.cudaMalloc.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_size_t]
        lib.cudaMemcpy.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        lib.cudaFree.argtypes = [ctypes.c_void_p]
        return path, lib
    pytest.skip("no CUDA runtime with a GPU could be loaded (set WARPLOAD_CUDA_RUNTIME to a libcudart.so on a "
                f"GPU machine): {tried[-1] if tried else 'no candidates'}")


def load_to_device(runtime, path) -> dict[str, torch.Tensor]:
    """Every tensor of a safetensors file copied into one cudaMalloc'd arena, read back to the host."""
    runtime_path, lib = runtime
    plan = plan_load(read_header(os.fspath(path)).records)
    arena = DeviceMemory(lib, plan.total_nbytes)
    try:
        base = arena.pointer.value or 0
        cuda.copy_to_device(plan, [(base, plan.total_nbytes)], [(0, s.dst_offset) for s in plan.storages],
                            engine.open_files(plan.paths), 0, padded=[0], runtime=runtime_path)
        host = arena.read()
    finally:
        arena.free()
    storages = engine.storage_tensors([host.numpy()] * len(plan.storages), [s.dst_offset for s in plan.storages],
                                      [s.dtype for s in plan.storages], [s.numel for s in plan.storages])
    return engine.wrap_tensors(plan, storages)


def assert_matches_safetensors(loaded, path):
    expected = load_file(os.fspath(path))
    assert set(loaded) == set(expected)
    for name, tensor in expected.items():
        assert same_bits(loaded[name], tensor), name


def test_mixed_file_is_bit_exact_through_a_small_ring(runtime, tmp_path, monkeypatch):
    monkeypatch.setenv(constants.ENV_CUDA_BUFFER_MB, "1")
    monkeypatch.setenv(constants.ENV_CUDA_BUFFERS, "2")
    tensors = {f"tiny{i}": random_tensor((i % 37,), torch.bfloat16, seed=i) for i in range(3000)}
    tensors["huge"] = random_tensor((40 * MIB,), torch.uint8, seed=1)
    path = tmp_path / "m.safetensors"
    save_file(tensors, os.fspath(path))
    assert_matches_safetensors(load_to_device(runtime, path), path)


def test_stress_loop_on_the_gpu(runtime, tmp_path, monkeypatch):
    rng = random.Random(3)
    for round_index in range(15):
        monkeypatch.setenv(constants.ENV_CUDA_BUFFER_MB, str(rng.choice([1, 2, 8])))
        monkeypatch.setenv(constants.ENV_CUDA_BUFFERS, str(rng.choice([1, 2, 4, 8])))
        monkeypatch.setenv(constants.ENV_READ_METHOD, rng.choice(["auto", "mmap", "pread"]))
        tensors = {f"t{i}": random_tensor((rng.choice([0, 3, 5000, 700_000, 5 * MIB]),),
                                          rng.choice([torch.uint8, torch.float16, torch.int64]), seed=round_index + i)
                   for i in range(rng.choice([1, 10, 200]))}
        path = tmp_path / f"s{round_index}.safetensors"
        save_file(tensors, os.fspath(path))
        assert_matches_safetensors(load_to_device(runtime, path), path)
        path.unlink()


@pytest.mark.parametrize("library", sorted(glob.glob("/usr/local/cuda*/lib64/libcudart.so.*")) or ["none"])
def test_real_runtime_resolves_every_function_the_pipeline_uses(library):
    """A real libcudart either works or reports that it sees no GPU: never 'lacks a function'."""
    if library == "none":
        pytest.skip("no CUDA toolkit runtime under /usr/local/cuda*/lib64 on this machine")
    try:
        path, count = cuda.runtime_info(library)
    except CudaUnavailableError as err:
        assert "sees no GPU" in str(err), err
    else:
        assert path == library and count >= 1
