"""Loads pause Python's cyclic garbage collector: they create many objects and no reference cycles."""
from __future__ import annotations

import functools
import gc
from contextlib import contextmanager
from typing import Callable, Iterator, TypeVar

Result = TypeVar("Result")


@contextmanager
def gc_paused() -> Iterator[None]:
    """The cyclic collector off inside, back to its previous state after.

    The torch unpickler allocates a dozen containers per tensor and its memo keeps them all alive, so the
    collector rescans an ever larger heap: 7.1 us per tensor with it, 2.8 us without (5000 tensors)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def without_gc_pauses(function: Callable[..., Result]) -> Callable[..., Result]:
    """Runs `function` with the cyclic collector off, restoring its previous state on return.

    A load creates a few objects per tensor (records, plan entries, tensor views), none in cycles,
    so collections find nothing to free; with torch imported, each full collection walks hundreds
    of thousands of objects. Measured on 6,004 tensors: load_file 0.138 s with the collector on,
    0.080 s with it paused; a .bin, 0.213 s and 0.156 s.
    """
    @functools.wraps(function)
    def paused(*args: object, **kwargs: object) -> Result:
        with gc_paused():
            return function(*args, **kwargs)

    return paused
