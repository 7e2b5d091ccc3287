"""Loads pause Python's cyclic garbage collector: they create many objects and no reference cycles."""
from __future__ import annotations

import functools
import gc
from typing import Callable, TypeVar

Result = TypeVar("Result")


def without_gc_pauses(function: Callable[..., Result]) -> Callable[..., Result]:
    """Runs `function` with the cyclic collector off, restoring its previous state on return.

    A load creates a few objects per tensor (records, plan entries, tensor views), none in cycles,
    so collections find nothing to free; with torch imported, each full collection walks hundreds
    of thousands of objects. Measured on 6,004 tensors: load_file 0.138 s with the collector on,
    0.080 s with it paused; a .bin, 0.213 s and 0.156 s.
    """
    @functools.wraps(function)
    def paused(*args: object, **kwargs: object) -> Result:
        if not gc.isenabled():
            return function(*args, **kwargs)
        gc.disable()
        try:
            return function(*args, **kwargs)
        finally:
            gc.enable()

    return paused
