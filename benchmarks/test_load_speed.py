"""pytest-benchmark timings of warpload, its peers and the machine limits, warm and cold, checked for correctness.

Not part of the CI suite (that is tests/). Run from the repository root:

    pytest benchmarks/ --benchmark-only                       # 0.27 GB synthetic GPT-2, about a minute
    WARPLOAD_BENCH_CHECKPOINT=gpt2-medium pytest benchmarks/ --benchmark-only   # the 1.4 GB one
    WARPLOAD_BENCH_CHECKPOINT=/path/model.safetensors pytest benchmarks/ --benchmark-only

Results are grouped by page-cache state, so each group compares the loaders side by side.
`warpload bench` prints the same cases with ratios and the machine's limits in one table.
"""
from __future__ import annotations

import gc
import math
import os
from typing import Any

import pytest
import torch
from safetensors import safe_open

from warpload.bench.harness import (
    CACHE_STATES,
    NO_CACHE,
    PEERS,
    WARPLOAD,
    Case,
    memory_cases,
    read_limit_case,
    set_cache_state,
)

ROUNDS = 5
LOADERS = {**WARPLOAD, **PEERS}


class Rounds:
    """Runs a case once per benchmark round, keeping only the latest result.

    pytest-benchmark would hold the previous round's result while the next setup runs, and a live
    zero-copy mapping keeps its pages in the cache, so the next cold round would not be cold.
    """

    def __init__(self, case: Case, cache: str) -> None:
        self.case = case
        self.cache = cache
        self.last: Any = None

    def setup(self) -> None:
        self.last = None
        gc.collect()
        if self.case.source is not None:
            note = set_cache_state(self.case.source, self.cache)
            assert note is None, note

    def run(self) -> None:
        self.last = self.case.run()

    def time(self, benchmark: Any) -> Any:
        """Times ROUNDS rounds in the `cache` group; returns the last round's result."""
        benchmark.group = f"{self.cache} page cache" if self.case.source else "memory limits"
        benchmark.pedantic(self.run, setup=self.setup, rounds=ROUNDS, iterations=1)
        return self.last


@pytest.fixture(scope="session")
def expected(checkpoint: str) -> dict[str, Any]:
    """What every loader must return, read with safetensors itself: the names and the largest tensor."""
    with safe_open(checkpoint, framework="pt") as reference:
        names = set(reference.keys())
        largest = max(names, key=lambda name: math.prod(reference.get_slice(name).get_shape()))
        # A copy: safetensors' tensor views its mapping, which would pin those pages in the cache.
        return {"names": names, "largest": largest, "tensor": reference.get_tensor(largest).clone()}


@pytest.mark.parametrize("cache", CACHE_STATES)
@pytest.mark.parametrize("name", list(LOADERS))
def test_load(benchmark: Any, checkpoint: str, expected: dict[str, Any], name: str, cache: str) -> None:
    try:
        case = LOADERS[name].case(checkpoint)
    except ImportError as err:
        pytest.skip(f"skipped: {name} is not installed ({err})")
    loaded = Rounds(case, cache).time(benchmark)
    assert set(loaded) == expected["names"]
    assert torch.equal(loaded[expected["largest"]], expected["tensor"])


@pytest.mark.parametrize("cache", CACHE_STATES)
def test_sequential_read_limit(benchmark: Any, checkpoint: str, cache: str) -> None:
    assert Rounds(read_limit_case(checkpoint), cache).time(benchmark) == os.path.getsize(checkpoint)


@pytest.mark.parametrize("memory", ["touched memory", "fresh memory", "fresh huge pages"])
def test_memcpy_limit(benchmark: Any, checkpoint: str, memory: str) -> None:
    nbytes = os.path.getsize(checkpoint)
    case = next(c for c in memory_cases(nbytes) if c.name.endswith(memory))
    copied = Rounds(case, NO_CACHE).time(benchmark)
    assert copied.numel() == nbytes and bool(copied.eq(1).all())
