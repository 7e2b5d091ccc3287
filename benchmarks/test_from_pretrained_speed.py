"""pytest-benchmark timings of from_pretrained + the first token: warpload against transformers, warm and cold.

Not part of the CI suite. Run from the repository root (the checkpoints, 5 GB, are written once
under ~/.cache/warpload/from-pretrained by bench_from_pretrained.py's builders):

    pytest benchmarks/test_from_pretrained_speed.py --benchmark-only

Each group (checkpoint, page-cache state) holds both libraries side by side. The time covers
from_pretrained and one greedy token, because transformers 5 leaves CPU parameters as views of
the mapped files and pays the reads in the first forward. `python benchmarks/bench_from_pretrained.py`
prints the same comparison interleaved, with ratios, fresh-process cold starts and peak RSS.
"""
from __future__ import annotations

import gc
from typing import Any

import pytest

pytest.importorskip("transformers")

from bench_from_pretrained import (  # noqa: E402
    CACHE_STATES,
    CHECKPOINTS,
    LIBRARIES,
    ensure_checkpoint,
    first_token,
    load_function,
    set_cache_state,
)

ROUNDS = 3
# The first token each library produced per checkpoint: both must produce the same one.
FIRST_TOKENS: dict[str, dict[str, int]] = {}


@pytest.mark.parametrize("cache", CACHE_STATES)
@pytest.mark.parametrize("library", LIBRARIES)
@pytest.mark.parametrize("checkpoint", list(CHECKPOINTS))
def test_from_pretrained_and_first_token(benchmark: Any, checkpoint: str, library: str, cache: str) -> None:
    folder = ensure_checkpoint(CHECKPOINTS[checkpoint])
    load = load_function(library)
    tokens: list[int] = []

    def setup() -> None:
        gc.collect()
        set_cache_state(folder, cache)

    def run() -> None:
        model = load(folder)
        tokens.append(first_token(model))
        assert not model.training

    benchmark.group = f"{checkpoint}, {cache} page cache"
    benchmark.pedantic(run, setup=setup, rounds=ROUNDS, iterations=1)
    assert len(set(tokens)) == 1
    seen = FIRST_TOKENS.setdefault(checkpoint, {})
    seen[library] = tokens[0]
    assert len(set(seen.values())) == 1, f"the libraries disagree on the first token: {seen}"
