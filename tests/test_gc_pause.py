"""Loads run with the cyclic garbage collector paused and leave it as they found it, even on errors."""
from __future__ import annotations

import gc

import pytest

import warpload
from warpload.gc_pause import without_gc_pauses


@without_gc_pauses
def collector_state(fail: bool = False) -> bool:
    if fail:
        raise ValueError("boom")
    return gc.isenabled()


def test_collector_is_off_inside_and_back_on_after():
    assert gc.isenabled()
    assert collector_state() is False
    assert gc.isenabled()


def test_collector_comes_back_after_an_error():
    with pytest.raises(ValueError):
        collector_state(fail=True)
    assert gc.isenabled()


def test_a_collector_the_caller_disabled_stays_disabled(tiny_safetensors):
    gc.disable()
    try:
        warpload.load_file(tiny_safetensors)
        assert not gc.isenabled()
    finally:
        gc.enable()


@pytest.fixture
def tiny_safetensors(tmp_path):
    import torch
    from safetensors.torch import save_file

    path = tmp_path / "tiny.safetensors"
    save_file({"x": torch.arange(4.0)}, str(path))
    return path
