"""A weights-only unpickler for PyTorch checkpoints: checks every opcode before the C unpickler builds stand-ins.

The model is torch.load(weights_only=True) (torch/_weights_only_unpickler.py, formats.md 2.3): the
same opcodes, and the same allow-list of globals, which resolve to warpload's stand-ins
(torch_objects.py). Two passes keep it safe and fast: a scan in C++ checks every opcode, global,
memo index and nesting depth without running anything, then the C unpickler builds the objects. On a
5000-tensor state dict: 0.3 us per tensor to scan, 2 us to unpickle; torch's pure-Python weights-only
unpickler makes torch.load(weights_only=True) take 43 us per tensor.
"""
from __future__ import annotations

import io
import pickle
from typing import Any, Callable, Optional

from .._native import core
from ..constants import TORCH_MAX_PICKLE_BYTES, TORCH_MAX_PICKLE_NESTING
from ..errors import CheckpointError, UnsafeCheckpointError, WarploadError
from ..gc_pause import gc_paused
from .torch_objects import resolve_global

# torch.load(weights_only=True)'s opcodes (torch/_weights_only_unpickler.py); csrc/pickle_scan.cpp refuses the rest.
_OPCODES = frozenset(bytes([op]) for op in core().weights_only_opcodes())

# What the scan's statuses mean, for those that are malformed rather than forbidden.
_SCAN_PROBLEMS = {
    "missing operand": "opcode {opcode} finds the pickle stack or memo without what it needs",
    "memo index too large": "memo index {memo_index} is larger than any pickle writer produces",
    "tuples too deep": "tuples nest deeper than {limit} levels",
    "marks too deep": "containers nest deeper than {limit} levels",
}


def pickle_length(data: bytes, *, source: str, path: str) -> Optional[int]:
    """Checks the pickle at the start of data without running it; returns its length (through STOP), or None
    when data ends first.

    Raises UnsafeCheckpointError for an opcode or global outside torch's weights-only sets, and
    CheckpointError for what no pickle writer produces but would harm the C unpickler: a memo index far
    beyond the pickle's size (it sizes its memo table by the largest index, so LONG_BINPUT 0xFFFFFFFF
    alone allocates 64 GiB), or nesting deeper than TORCH_MAX_PICKLE_NESTING (hashing a dict key nested
    10^5 tuples deep overflows the C stack). The scan runs in C++ (csrc/pickle_scan.cpp, GIL released):
    0.1 us per opcode, where a Python loop took 13 us per tensor. Problems are reported in the order of
    their bytes: each GLOBAL before the scan's stopping point is checked against the allow-list first.
    """
    status, pos, memo_index, globals_before = core().scan_pickle(data, TORCH_MAX_PICKLE_NESTING)
    for offset, module, name in globals_before:
        resolve_global(_text(module, source, path, offset), _text(name, source, path, offset),
                       source=source, path=path, offset=offset)
    if status == "complete":
        return pos
    if status == "truncated":
        return None
    if status == "forbidden opcode":
        raise UnsafeCheckpointError(
            f"{source}, byte {pos}: opcode {_opcode_name(data[pos])} is not allowed in a weights-only pickle "
            "(torch.load(weights_only=True) refuses it too); nothing was run. torch.save writes pickle "
            "protocol 2: this file was written with another pickle_protocol, by another tool, or was "
            "tampered with", path=path, offset=pos)
    problem = _SCAN_PROBLEMS[status].format(opcode=_opcode_name(data[pos]), memo_index=memo_index,
                                            limit=TORCH_MAX_PICKLE_NESTING)
    raise CheckpointError(f"{source}, byte {pos}: {problem}; the file is corrupt or hostile", path=path, offset=pos)


def _text(raw: bytes, source: str, path: str, pos: int) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise CheckpointError(f"{source}, byte {pos}: GLOBAL name {raw[:80]!r} is not UTF-8", path=path,
                              offset=pos) from err


def _opcode_name(op: int) -> str:
    import pickletools

    for info in pickletools.opcodes:
        if ord(info.code) == op:
            return f"{info.name} ({op:#04x})"
    return f"{op:#04x} (not a pickle opcode)"


class _WeightsOnlyUnpickler(pickle.Unpickler):
    def __init__(self, data: bytes, source: str, path: str,
                 persistent_load: Optional[Callable[[Any], Any]]) -> None:
        super().__init__(io.BytesIO(data), encoding="utf-8")
        self._source = source
        self._path = path
        if persistent_load is not None:
            self.persistent_load = persistent_load

    def find_class(self, module: str, name: str) -> Any:
        return resolve_global(module, name, source=self._source, path=self._path)


def load_pickle(data: bytes, *, path: str, name: str, persistent_load: Optional[Callable[[Any], Any]] = None) -> Any:
    """Unpickles `data` (the pickle `name` of checkpoint `path`) with stand-ins for everything torch would build.

    `persistent_load` turns persistent ids into StorageRefs. Raises UnsafeCheckpointError when the pickle asks
    for anything outside the allow-list (before running any of it), CheckpointError when it is malformed.
    """
    source = f"{path}: {name}"
    if len(data) > TORCH_MAX_PICKLE_BYTES:
        raise CheckpointError(f"{source} is {len(data)} bytes, above the {TORCH_MAX_PICKLE_BYTES}-byte limit; a "
                              "state dict needs about 100 bytes per tensor, so the file is corrupt or hostile",
                              path=path)
    if pickle_length(data, source=source, path=path) is None:
        raise CheckpointError(f"{source}: the pickle ends after {len(data)} bytes, before its STOP opcode; the "
                              "file is truncated or corrupt", path=path)
    unpickler = _WeightsOnlyUnpickler(data, source, path, persistent_load)
    try:
        with gc_paused():
            return unpickler.load()
    except CheckpointError as err:
        if err.path is not None:
            raise
        raise type(err)(f"{source}: {err}", path=path, tensor=err.tensor, offset=err.offset) from err
    except WarploadError:
        raise
    except Exception as err:  # anything the C unpickler raises on a malformed pickle
        raise CheckpointError(f"{source}: not a valid weights-only pickle ({type(err).__name__}: {err}); the "
                              "file is corrupt", path=path) from err
