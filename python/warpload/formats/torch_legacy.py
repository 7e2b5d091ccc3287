"""Legacy PyTorch checkpoints (torch < 1.6, or _use_new_zipfile_serialization=False): five pickles, then storages.

Layout (formats.md 2.5, torch/serialization.py _legacy_save): pickled magic number, protocol version,
sys_info, the state dict, the sorted list of storage keys; then, for each key in that order, the
storage's element count (int64 little-endian) and its bytes, packed with no alignment. Storage
bytes are little-endian whatever the writer's byte order (torch's THPStorage_writeFileRaw converts).
"""
from __future__ import annotations

import mmap
from typing import Any, Callable, Optional

from ..constants import TORCH_MAX_PICKLE_BYTES
from ..errors import CheckpointError
from .registry import CheckpointContents, Format, register
from .torch_objects import StorageRef, TorchFile, state_dict_records, storage_id
from .torch_pickle import load_pickle, pickle_length

MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
PROTOCOL_VERSION = 1001
# PROTO n, then LONG1 with the 10 bytes of MAGIC_NUMBER: how every protocol-2 (torch's default) or
# protocol-3 file starts.
_MAGIC_PICKLE = b"\x8a\x0a" + MAGIC_NUMBER.to_bytes(10, "little")


def sniff(head: bytes, size: int) -> bool:
    return len(head) >= 2 + len(_MAGIC_PICKLE) and head[0] == 0x80 and head[2:].startswith(_MAGIC_PICKLE)


class _PickleSequence:
    """The pickles at the start of a legacy file, read one after another from a memory map."""

    def __init__(self, data: mmap.mmap, path: str) -> None:
        self.data = data
        self.path = path
        self.offset = 0

    def load(self, name: str, persistent_load: Optional[Callable[[Any], Any]] = None) -> Any:
        # The length of a pickle is only known by scanning it; scan a growing window rather than
        # copying what may be gigabytes of storage bytes after it.
        available = min(len(self.data) - self.offset, TORCH_MAX_PICKLE_BYTES)
        window = 1 << 16
        while True:
            chunk = self.data[self.offset:self.offset + min(window, available)]
            length = pickle_length(chunk, source=f"{self.path}: {name}", path=self.path)
            if length is not None:
                break
            if len(chunk) >= available:
                raise CheckpointError(
                    f"{self.path}: {name} at byte {self.offset} does not end within "
                    f"{len(chunk)} bytes (the limit is {TORCH_MAX_PICKLE_BYTES}); the file is truncated or corrupt",
                    path=self.path, offset=self.offset)
            window *= 8
        value = load_pickle(chunk[:length], path=self.path, name=name, persistent_load=persistent_load)
        self.offset += length
        return value


def _corrupt(path: str, problem: str, offset: Optional[int] = None) -> CheckpointError:
    return CheckpointError(f"{path}: {problem}; the file is corrupt or not a legacy torch checkpoint", path=path,
                           offset=offset)


def _describe(value: Any) -> str:
    return repr(value) if type(value) is int else f"a {type(value).__name__}"


def read_structure(path: str) -> TorchFile:
    """The unpickled object of a legacy torch.save checkpoint, with its storages located in the file.

    Storage offsets come from walking the storages in key-list order. sys_info's byte order does not matter:
    torch's legacy writer stores little-endian bytes on every machine. Raises UnsafeCheckpointError for a
    pickle outside the weights-only allow-list, CheckpointError for a corrupt file.
    """
    with open(path, "rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
        pickles = _PickleSequence(data, path)
        magic = pickles.load("legacy pickle 1 (magic number)")
        if magic != MAGIC_NUMBER:
            raise _corrupt(path, f"magic number {_describe(magic)}, expected {MAGIC_NUMBER:#x}", 0)
        version = pickles.load("legacy pickle 2 (protocol version)")
        if version != PROTOCOL_VERSION:
            raise _corrupt(path, f"protocol version {_describe(version)}, expected {PROTOCOL_VERSION}")
        if not isinstance(pickles.load("legacy pickle 3 (sys_info)"), dict):
            raise _corrupt(path, "sys_info is not a dict")

        roots: dict[str, StorageRef] = {}
        views: dict[str, tuple[StorageRef, StorageRef, int]] = {}
        source = f"{path}: legacy pickle 4 (state dict)"

        def persistent_load(pid: Any) -> StorageRef:
            storage_type, key, numel, (view,) = storage_id(pid, 6, source=source, path=path)
            root = roots.get(key)
            if root is None:
                root = roots[key] = StorageRef(key, storage_type.dtype, numel)
            if view is None:
                return root
            # Storage views (torch < 0.4): (view key, element offset, element count) inside the root.
            if not (type(view) is tuple and len(view) == 3 and type(view[0]) is str
                    and all(type(v) is int and v >= 0 for v in view[1:])):
                raise _corrupt(path, f"storage view of {key!r} is {_describe(view)}, not (key, offset, size)")
            view_key, start, count = view
            if start + count > root.numel:
                raise _corrupt(path, f"storage view {view_key!r} covers elements [{start}, {start + count}) of "
                               f"{key!r}, which has {root.numel}")
            if view_key not in views:
                views[view_key] = (StorageRef(view_key, root.dtype, count), root, start)
            return views[view_key][0]

        state = pickles.load("legacy pickle 4 (state dict)", persistent_load)
        keys = pickles.load("legacy pickle 5 (storage keys)")
        if type(keys) is not list or not all(type(k) is str for k in keys):
            raise _corrupt(path, "the storage key list is not a list of strings")
        offset = pickles.offset
        for key in keys:
            ref = roots.get(key)
            if ref is None or ref.offset is not None:
                raise _corrupt(path, f"storage key {key[:40]!r} is not a storage of the state dict, or is listed "
                               "twice", offset)
            if offset + 8 > len(data):
                raise _corrupt(path, f"storage {key!r} starts past the end of the file (truncated)", offset)
            count = int.from_bytes(data[offset:offset + 8], "little", signed=True)
            if count != ref.numel:
                raise _corrupt(path, f"storage {key!r} has {count} elements, its id says {ref.numel}", offset)
            ref.offset = offset + 8
            offset = ref.offset + ref.nbytes
            if offset > len(data):
                raise _corrupt(path, f"storage {key!r} ends at byte {offset}, the file has {len(data)} (truncated)",
                               ref.offset)
        for view_ref, root, start in views.values():
            if root.offset is not None:
                view_ref.offset = root.offset + start * root.itemsize
    return TorchFile(path, state, (*roots.values(), *(view for view, _, _ in views.values())))


def read_records(path: str) -> CheckpointContents:
    """Tensor records of the state dict of a legacy torch.save checkpoint (found in the common wrappers too), in
    its order. Raises what read_structure raises, and UnsupportedFormatError when the file holds no state dict."""
    return CheckpointContents(tuple(state_dict_records(read_structure(path).state, path)), None)


register(Format("pytorch-legacy", sniff, read_records, read_structure=read_structure))
