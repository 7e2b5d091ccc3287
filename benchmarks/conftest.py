"""The checkpoint the load-speed benchmarks read, chosen with WARPLOAD_BENCH_CHECKPOINT."""
from __future__ import annotations

import os

import pytest

from warpload.bench.synthetic import SHAPES, GPT2Shape, default_checkpoint, write_gpt2_checkpoint

# Read only by these benchmarks, so it lives here rather than in warpload.constants.
ENV_BENCH_CHECKPOINT = "WARPLOAD_BENCH_CHECKPOINT"
# GPT-2 small's width with 4 of its 12 layers: 0.27 GB, so the whole suite runs in about a minute
# on 2 cores while the embedding (0.15 GB) still dominates as in the real model.
SMALL = GPT2Shape(n_layer=4)


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Path of the .safetensors file to load: 'small' (default), 'gpt2', 'gpt2-medium' or a path."""
    choice = os.environ.get(ENV_BENCH_CHECKPOINT, "small")
    if choice == "small":
        return write_gpt2_checkpoint(str(tmp_path_factory.mktemp("small-gpt2")), SMALL)
    if choice in SHAPES:
        return default_checkpoint(choice)
    if os.path.isfile(choice):
        return choice
    raise pytest.UsageError(f"{ENV_BENCH_CHECKPOINT}={choice!r}: give small, {', '.join(SHAPES)} "
                            "or the path of a .safetensors file")
