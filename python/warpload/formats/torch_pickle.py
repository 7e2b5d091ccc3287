"""A weights-only unpickler for PyTorch checkpoints: checks every opcode before the C unpickler builds stand-ins.

The model is torch.load(weights_only=True) (torch/_weights_only_unpickler.py, formats.md 2.3): the
same opcodes, and the same allow-list of globals, which resolve to warpload's stand-ins
(torch_objects.py). Two passes keep it safe and fast: a scan in Python checks every opcode, global,
memo index and nesting depth without running anything, then the C unpickler builds the objects. On a
5000-tensor state dict: 5 us per tensor to scan, 2 us to unpickle; torch's pure-Python weights-only
unpickler makes torch.load(weights_only=True) take 43 us per tensor.
"""
from __future__ import annotations

import gc
import io
import pickle
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Optional

from ..constants import TORCH_MAX_PICKLE_BYTES, TORCH_MAX_PICKLE_NESTING
from ..errors import CheckpointError, UnsafeCheckpointError, WarploadError
from .torch_objects import resolve_global


# torch.load(weights_only=True)'s opcodes (torch/_weights_only_unpickler.py), each with what it does to
# the stack, as the scan models it, and its length: the opcode byte plus fixed argument bytes (for
# strings and GLOBAL, the part before the variable-length text). Everything else is refused.
(_PUSH, _PUT, _GET, _MARK, _TUPLE, _TUPLE_N, _EMPTY_TUPLE, _POP_MARK, _CALL, _POP, _POP2, _PERSID, _STRING,
 _SHORT_STRING, _GLOBAL, _PROTO, _STOP) = range(1, 18)
_OPCODES = {
    pickle.BININT: (_PUSH, 5), pickle.BININT1: (_PUSH, 2), pickle.BININT2: (_PUSH, 3), pickle.BINFLOAT: (_PUSH, 9),
    pickle.NONE: (_PUSH, 1), pickle.NEWTRUE: (_PUSH, 1), pickle.NEWFALSE: (_PUSH, 1),
    pickle.EMPTY_LIST: (_PUSH, 1), pickle.EMPTY_DICT: (_PUSH, 1), pickle.EMPTY_SET: (_PUSH, 1),
    pickle.BINPUT: (_PUT, 2), pickle.LONG_BINPUT: (_PUT, 5), pickle.BINGET: (_GET, 2), pickle.LONG_BINGET: (_GET, 5),
    pickle.MARK: (_MARK, 1), pickle.TUPLE: (_TUPLE, 1), pickle.TUPLE1: (_TUPLE_N, 1), pickle.TUPLE2: (_TUPLE_N, 1),
    pickle.TUPLE3: (_TUPLE_N, 1), pickle.EMPTY_TUPLE: (_EMPTY_TUPLE, 1), pickle.APPENDS: (_POP_MARK, 1),
    pickle.SETITEMS: (_POP_MARK, 1), pickle.REDUCE: (_CALL, 1), pickle.NEWOBJ: (_CALL, 1), pickle.APPEND: (_POP, 1),
    pickle.BUILD: (_POP, 1), pickle.SETITEM: (_POP2, 1), pickle.BINPERSID: (_PERSID, 1),
    pickle.BINUNICODE: (_STRING, 5), pickle.SHORT_BINSTRING: (_SHORT_STRING, 2), pickle.LONG1: (_SHORT_STRING, 2),
    pickle.GLOBAL: (_GLOBAL, 1), pickle.PROTO: (_PROTO, 2), pickle.STOP: (_STOP, 1),
}
_OPCODE_TABLE = [(0, 1)] * 256
for _op, _entry in _OPCODES.items():
    _OPCODE_TABLE[_op[0]] = _entry
_TUPLE0 = pickle.TUPLE1[0] - 1  # TUPLE1..TUPLE3 are consecutive opcodes


def pickle_length(data: bytes, *, source: str, path: str) -> Optional[int]:
    """Checks the pickle at the start of data without running it; returns its length (through STOP), or None
    when data ends first.

    Raises UnsafeCheckpointError for an opcode or global outside torch's weights-only sets, and
    CheckpointError for what no pickle writer produces but would harm the C unpickler: a memo index far
    beyond the pickle's size (it sizes its memo table by the largest index, so LONG_BINPUT 0xFFFFFFFF
    alone allocates 64 GiB), or nesting deeper than TORCH_MAX_PICKLE_NESTING (hashing a dict key nested
    10^5 tuples deep overflows the C stack). To find tuple depths it tracks, for each stack entry, how
    deeply tuples nest in it (0 for anything else).
    """
    def fail(problem: str) -> CheckpointError:
        return CheckpointError(f"{source}, byte {pos}: {problem}; the file is corrupt or hostile", path=path,
                               offset=pos)

    table, limit = _OPCODE_TABLE, TORCH_MAX_PICKLE_NESTING
    end = len(data)
    pos = 0
    stack: list[int] = []
    push = stack.append
    marks: list[int] = []  # stack heights at each open MARK
    memo: dict[int, int] = {}
    try:
        # Branches in order of frequency in state dicts; data past `end` is never read (a truncated
        # argument moves pos past end, which ends the loop).
        while pos < end:
            op = data[pos]
            kind, length = table[op]
            if kind == _PUT:
                if pos + length > end:
                    return None
                index = data[pos + 1] if length == 2 else int.from_bytes(data[pos + 1:pos + 5], "little")
                if index > pos:
                    raise fail(f"memo index {index} is larger than any pickle writer produces")
                memo[index] = stack[-1]
            elif kind == _PUSH:
                push(0)
            elif kind == _GET:
                if pos + length > end:
                    return None
                push(memo[data[pos + 1] if length == 2 else int.from_bytes(data[pos + 1:pos + 5], "little")])
            elif kind == _TUPLE_N or kind == _TUPLE:
                start = len(stack) - (op - _TUPLE0) if kind == _TUPLE_N else marks.pop()
                if start < 0:
                    raise IndexError(start)
                depth = 1 + max(stack[start:]) if start < len(stack) else 1
                if depth > limit:
                    raise fail(f"tuples nest deeper than {limit} levels")
                stack[start:] = (depth,)
            elif kind == _MARK:
                marks.append(len(stack))
                if len(marks) > limit:
                    raise fail(f"containers nest deeper than {limit} levels")
            elif kind == _STRING:
                length += int.from_bytes(data[pos + 1:pos + 5], "little")
                push(0)
            elif kind == _CALL:
                # A call's result (a tensor stand-in, a container, a number) holds no tuple deeper than 1.
                stack.pop()
                stack[-1] = 1
            elif kind == _PERSID:
                stack[-1] = 0
            elif kind == _EMPTY_TUPLE:
                push(1)
            elif kind == _POP_MARK:
                del stack[marks.pop():]
            elif kind == _POP or kind == _POP2:
                del stack[-1 if kind == _POP else -2:]
            elif kind == _SHORT_STRING:
                if pos + length > end:
                    return None
                length += data[pos + 1]
                push(0)
            elif kind == _GLOBAL:
                module_end = data.find(b"\n", pos + 1)
                name_end = data.find(b"\n", module_end + 1)
                if module_end < 0 or name_end < 0:
                    return None
                resolve_global(_text(data[pos + 1:module_end], source, path, pos),
                               _text(data[module_end + 1:name_end], source, path, pos),
                               source=source, path=path, offset=pos)
                length = name_end + 1 - pos
                push(0)
            elif kind == _STOP:
                return pos + 1
            elif kind != _PROTO:
                raise UnsafeCheckpointError(
                    f"{source}, byte {pos}: opcode {_opcode_name(op)} is not allowed in a weights-only pickle "
                    "(torch.load(weights_only=True) refuses it too); nothing was run. torch.save writes pickle "
                    "protocol 2: this file was written with another pickle_protocol, by another tool, or was "
                    "tampered with", path=path, offset=pos)
            pos += length
    except (IndexError, KeyError) as err:
        raise fail(f"opcode {_opcode_name(data[pos])} finds the pickle stack or memo without what it needs") from err
    return None


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


@contextmanager
def _gc_paused() -> Iterator[None]:
    # The unpickler allocates a dozen containers per tensor and the memo keeps them all alive, so
    # the cyclic GC rescans an ever larger heap: 7.1 us per tensor with it, 2.8 us without (5000 tensors).
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


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
        with _gc_paused():
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
