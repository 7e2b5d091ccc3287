"""safetensors' get_slice rules (bindings/python/src/lib.rs `slice_to_indexer`, safetensors/src/slice.rs): which
indexes a slice takes, and the errors, word for word, for those it refuses. warpload then indexes as torch and
numpy do; steps, which safetensors ignores, are honoured."""
from __future__ import annotations

from typing import Any, Optional

from ..errors import SliceError


def _bound(value: Optional[int]) -> str:
    return "" if value is None else str(value)


def _indexers(index: Any, shape: tuple[int, ...]) -> Optional[list[tuple[str, int, int]]]:
    """(display, start, stop) per indexed dimension, or None for an index safetensors' rules do not cover
    (Ellipsis, None, tensors, booleans): torch or numpy then judge it."""
    if isinstance(index, list):
        if index:
            raise SliceError("Non empty lists are not implemented")
        return [(":0", 0, 0)] if shape else []
    parts = index if isinstance(index, tuple) else (index,)
    indexers = []
    for dim, (part, size) in enumerate(zip(parts, shape)):
        if isinstance(part, bool) or not isinstance(part, (int, slice)):
            return None
        if isinstance(part, int):
            position = part + size if part < 0 else part
            if position < 0:
                raise SliceError(f"Invalid index {part} for dimension {dim} of size {size}")
            indexers.append((str(position), position, position + 1))
            continue
        if (part.start is not None and part.start < 0) or (part.stop is not None and part.stop < 0):
            return None
        start = 0 if part.start is None else part.start
        stop = size if part.stop is None else part.stop
        indexers.append((f"{_bound(part.start)}:{_bound(part.stop)}", start, stop))
    if len(parts) > len(shape):
        raise SliceError(f"Error during slicing [{', '.join(d for d, _, _ in indexers)}] with shape "
                         f"{list(shape)}: more slicing indexes than dimensions in tensor")
    return indexers


def check_slice(index: Any, shape: tuple[int, ...]) -> None:
    """Raises SliceError where safetensors' get_slice refuses `index` on a tensor of `shape`: non-empty lists,
    negative indexes below -size, and starts or stops past the end (which torch and numpy would clip)."""
    indexers = _indexers(index, shape)
    if indexers is None:
        return
    for dim, (_, start, stop) in enumerate(indexers):
        size = shape[dim]
        if start >= size or stop > size:
            if start == stop == 0 and size == 0:
                continue
            asked = start if start >= size else max(stop - 1, 0)
            shown = ", ".join(display for display, _, _ in indexers)
            raise SliceError(f"Error during slicing [{shown}] with shape {list(shape)}: index {asked} out of bounds "
                             f"for tensor dimension #{dim} of size {size}")
