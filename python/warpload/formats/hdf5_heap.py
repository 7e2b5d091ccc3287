"""HDF5 global heap collections (where variable-length strings such as Keras' layer_names live), checked before h5py
reads them: HDF5 2.0 loops forever on a damaged collection instead of failing.

H5HG__cache_heap_deserialize walks a collection's objects with `p = begin + need`, where need is the object's
size (free space, index 0) or its header plus its aligned size: an object of size 0, or one whose size
overflows that sum to 0, never moves p. A damaged collection size that stretches the walk over zero bytes
beyond it hangs the reading thread, found by fuzzing damaged tf_model.h5 files (HDF5 format spec III.E).
"""
from __future__ import annotations

import struct
from typing import Any, Iterator

from ..errors import CheckpointError

SIGNATURE = b"GCOL"
HEADER_BYTES = 16        # signature, version 1, 3 reserved bytes, collection size (8-byte lengths)
OBJECT_HEADER_BYTES = 16  # index, reference count, 4 reserved bytes, object size
MIN_COLLECTION_BYTES = 4096  # H5HG_MINSIZE
_SIZE_MASK = (1 << 64) - 1  # size_t arithmetic, as HDF5 does it


def metadata_ranges(handle: Any, file_size: int) -> Iterator[tuple[int, int]]:
    """(start, end) of the parts of the file that are not contiguous dataset storage: the only places HDF5
    metadata, global heaps included, can be. Reading them costs little even for a file of many GB."""
    storage = []

    def visit(name: str, item: Any) -> None:
        if hasattr(item, "id") and hasattr(item.id, "get_offset"):
            offset = item.id.get_offset()
            if offset is not None:
                storage.append((offset, offset + item.id.get_storage_size()))

    handle.visititems(visit)
    cursor = 0
    for start, end in sorted(storage):
        if min(start, file_size) > cursor:
            yield cursor, min(start, file_size)
        cursor = max(cursor, end)
    if cursor < file_size:
        yield cursor, file_size


def check_global_heaps(path: str, handle: Any, file_size: int) -> None:
    """Raises CheckpointError for a global heap collection of the open h5py file `handle` (of file_size bytes)
    that HDF5 would walk forever (see the module's docstring); collections that HDF5 rejects by itself (bad
    signature, size past the end) are left to it."""
    with open(path, "rb") as raw:
        for start, end in metadata_ranges(handle, file_size):
            raw.seek(start)
            region = raw.read(end - start)
            found = region.find(SIGNATURE)
            while found >= 0:
                _check_collection(path, raw, start + found, file_size)
                found = region.find(SIGNATURE, found + 1)


def _check_collection(path: str, raw: Any, address: int, file_size: int) -> None:
    raw.seek(address)
    header = raw.read(HEADER_BYTES)
    if len(header) < HEADER_BYTES or header[4] != 1:
        return
    (size,) = struct.unpack_from("<Q", header, 8)
    if size < MIN_COLLECTION_BYTES or address + size > file_size:
        return
    raw.seek(address)
    collection = raw.read(size)
    position = HEADER_BYTES
    while position + OBJECT_HEADER_BYTES <= size:
        index, = struct.unpack_from("<H", collection, position)
        (object_size,) = struct.unpack_from("<Q", collection, position + 8)
        aligned = ((object_size + 7) & _SIZE_MASK) & ~7  # H5HG_ALIGN, wrapping as size_t does
        need = object_size if index == 0 else (OBJECT_HEADER_BYTES + aligned) & _SIZE_MASK
        if need == 0:
            raise CheckpointError(
                f"{path}: the HDF5 global heap collection at byte {address} is damaged (an object of size 0 at byte "
                f"{address + position}; HDF5 would read it forever); the file is damaged: download or save it "
                "again", path=path, offset=address + position)
        if position + need > size:
            return  # HDF5 reports this overflow itself
        position += need
