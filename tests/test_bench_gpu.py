"""benchmarks/bench_gpu.py runs anywhere: skips without a GPU, writes its checkpoint, formats its table."""
from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import same_bits
from warpload import load_checkpoint
from warpload.bench.harness import Timing

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_gpu.py"


@pytest.fixture(scope="module")
def bench_gpu():
    spec = importlib.util.spec_from_file_location("bench_gpu", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


def test_skips_cleanly_without_a_gpu(bench_gpu, capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the benchmark would run for real")
    assert bench_gpu.main(["--size-gb", "0.001"]) == 0
    assert "skipped: no CUDA GPU" in capsys.readouterr().out


def test_checkpoint_is_sharded_indexed_and_reused(bench_gpu, tmp_path):
    files = bench_gpu.write_checkpoint(os.fspath(tmp_path), 300_000, "float16", shard_bytes=100_000,
                                       matrix_elements=20_000)
    assert len(files) >= 3
    loaded = load_checkpoint(tmp_path)
    for path in files:
        for name, tensor in load_file(path).items():
            assert same_bits(loaded[name], tensor), name
    assert sum(t.nbytes for t in loaded.values()) >= 300_000
    stamps = [os.path.getmtime(path) for path in files]
    assert bench_gpu.write_checkpoint(os.fspath(tmp_path), 300_000, "float16", 100_000, 20_000) == files
    assert [os.path.getmtime(path) for path in files] == stamps


def test_report_states_ratios_against_safetensors_and_the_limits(bench_gpu):
    rows = [Timing("limit: disk sequential read", "cold", [2.0]),
            Timing("warpload", "warm", [0.5, 0.4, 0.6]),
            Timing(bench_gpu.BASELINE, "warm", [5.0]),
            Timing("warpload", "cold", [2.5]),
            Timing("instanttensor", "warm", skipped="ModuleNotFoundError: instanttensor")]
    # 10 GB; pinned H2D: 1 GiB in 0.0214748 s = 50 GB/s.
    text = bench_gpu.report(rows, 10 * 10**9, bench_gpu.H2D_BYTES / 50e9, [], {"gpu": "test"})
    assert "| warpload | warm | 0.500 | 20.00 | 10.00x | 40% |" in text
    assert "| warpload | cold | 2.500 | 4.00 | - | 80% |" in text
    assert "skipped: ModuleNotFoundError: instanttensor" in text
    assert "pinned host-to-device 50.0 GB/s" in text
