"""A small TF tensor bundle writer for tests (formats.md 3): lays out .index SSTables as TF's BundleWriter does,
and can be told to break them on purpose."""
from __future__ import annotations

import struct
from pathlib import Path
from typing import Optional, Sequence

from warpload import _core

MAGIC = bytes.fromhex("57fb808b247547db")
# TF DataType values for the dtypes tests write (formats.md 3.6).
DT = {"F32": 1, "F64": 2, "I32": 3, "U8": 4, "I16": 5, "I8": 6, "STRING": 7, "C64": 8, "I64": 9, "BOOL": 10,
      "BF16": 14, "U16": 17, "C128": 18, "F16": 19, "VARIANT": 21, "U32": 22, "U64": 23, "F8_E5M2": 24,
      "F8_E4M3": 25}


def varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # negative int64 fields: two's complement, 10 bytes
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def read_varints(data: bytes, count: int) -> list[int]:
    """The first count varints of data (for finding blocks in a table being damaged on purpose)."""
    values, pos = [], 0
    for _ in range(count):
        value = shift = 0
        while True:
            byte = data[pos]
            pos += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                break
        values.append(value)
    return values


def footer_handles(table: bytes) -> list[int]:
    """metaindex offset, metaindex size, index offset, index size."""
    return read_varints(table[-48:], 4)


def masked_crc(data: bytes) -> int:
    crc = _core.crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def field(number: int, value) -> bytes:
    """A proto field: int -> varint, bytes -> length-delimited."""
    if isinstance(value, bytes):
        return varint(number << 3 | 2) + varint(len(value)) + value
    return varint(number << 3) + varint(value)


def header_proto(num_shards: int = 1, endianness: int = 0, producer: int = 1, min_consumer: int = 0,
                 bad_consumers: Sequence[int] = ()) -> bytes:
    version = (field(1, producer) if producer else b"") + (field(2, min_consumer) if min_consumer else b"")
    if bad_consumers:  # proto3 packs repeated scalars
        version += field(3, b"".join(varint(v) for v in bad_consumers))
    return ((field(1, num_shards) if num_shards else b"") + (field(2, endianness) if endianness else b"")
            + field(3, version))


def entry_proto(dtype: int, shape: Sequence[int], *, shard_id: int = 0, offset: int = 0, size: int = 0,
                crc: Optional[int] = None, slices: Sequence[Sequence[tuple[int, int]]] = ()) -> bytes:
    """A BundleEntryProto with proto3's omitted zeros, fields in TF's order."""
    shape_bytes = b"".join(field(2, field(1, dim) if dim else b"") for dim in shape)
    out = field(1, dtype) + field(2, shape_bytes)
    for number, value in ((3, shard_id), (4, offset), (5, size)):
        if value:
            out += field(number, value)
    if crc is not None:
        out += varint(6 << 3 | 5) + struct.pack("<I", crc)
    for extents in slices:
        out += field(7, b"".join(field(1, (field(1, s) if s else b"") + (field(2, n) if n != -1 else b""))
                                 for s, n in extents))
    return out


class BlockBuilder:
    """Block contents (leveldb block_builder.cc): prefix-compressed entries, restart array, restart count."""

    def __init__(self, restart_interval: int = 16) -> None:
        self.restart_interval = restart_interval
        self.buffer = bytearray()
        self.restarts = [0]  # a restart at 0 even for an empty block
        self.count = 0
        self.previous = b""

    def add(self, key: bytes, value: bytes) -> None:
        shared = 0
        if self.count and self.count % self.restart_interval == 0:
            self.restarts.append(len(self.buffer))
        elif self.count:
            while shared < min(len(key), len(self.previous)) and key[shared] == self.previous[shared]:
                shared += 1
        self.buffer += varint(shared) + varint(len(key) - shared) + varint(len(value)) + key[shared:] + value
        self.previous = key
        self.count += 1

    def size_estimate(self) -> int:
        return len(self.buffer) + 4 * len(self.restarts) + 4

    def finish(self) -> bytes:
        return (bytes(self.buffer) + b"".join(struct.pack("<I", r) for r in self.restarts)
                + struct.pack("<I", len(self.restarts)))


def block(items: Sequence[tuple[bytes, bytes]], restart_interval: int = 16) -> bytes:
    builder = BlockBuilder(restart_interval)
    for key, value in items:
        builder.add(key, value)
    return builder.finish()


def stored_block(contents: bytes, block_type: int = 0) -> bytes:
    trailer = bytes([block_type])
    return contents + trailer + struct.pack("<I", masked_crc(contents + trailer))


def short_successor(key: bytes) -> bytes:
    """leveldb BytewiseComparator FindShortSuccessor: the index key after the last block."""
    for i, byte in enumerate(key):
        if byte != 0xFF:
            return key[:i] + bytes([byte + 1])
    return key


def shortest_separator(start: bytes, limit: bytes) -> bytes:
    """leveldb BytewiseComparator FindShortestSeparator: a short key in [start, limit)."""
    common = 0
    while common < min(len(start), len(limit)) and start[common] == limit[common]:
        common += 1
    if common < min(len(start), len(limit)) and start[common] < 0xFF and start[common] + 1 < limit[common]:
        return start[:common] + bytes([start[common] + 1])
    return start


def sstable(items: Sequence[tuple[bytes, bytes]], *, block_size: int = 262144) -> bytes:
    """A whole .index table as leveldb's TableBuilder writes it (table_builder.cc): a data block is flushed once
    its size estimate reaches block_size (TF: 256 KiB), index keys are shortest separators, then an empty
    metaindex block, the index block (restart interval 1) and the footer."""
    out = bytearray()
    index_items: list[tuple[bytes, bytes]] = []
    builder = BlockBuilder()
    pending_handle = None  # (last key of the flushed block, its handle), waiting for the next key

    def flush() -> None:
        nonlocal builder, pending_handle
        contents = builder.finish()
        pending_handle = (builder.previous, varint(len(out)) + varint(len(contents)))
        out.extend(stored_block(contents))
        builder = BlockBuilder()

    for key, value in items:
        if pending_handle is not None:
            index_items.append((shortest_separator(pending_handle[0], key), pending_handle[1]))
            pending_handle = None
        builder.add(key, value)
        if builder.size_estimate() >= block_size:
            flush()
    if builder.count or pending_handle is None:
        flush()
    index_items.append((short_successor(pending_handle[0]), pending_handle[1]))
    meta = block([])
    meta_handle = varint(len(out)) + varint(len(meta))
    out += stored_block(meta)
    index_contents = block(index_items, restart_interval=1)
    index_handle = varint(len(out)) + varint(len(index_contents))
    out += stored_block(index_contents)
    footer = meta_handle + index_handle
    return bytes(out) + footer + bytes(40 - len(footer)) + MAGIC


def write_bundle(prefix: Path, tensors: dict[str, tuple[str, Sequence[int], bytes]], *, header: Optional[bytes] = None,
                 extra: Sequence[tuple[bytes, bytes]] = ()) -> Path:
    """Writes prefix.index + prefix.data-00000-of-00001 holding tensors {name: (dtype key of DT, shape, bytes)},
    in the order given, unpadded, as BundleWriter does; `extra` adds raw (key, value) entries."""
    data = bytearray()
    items = [(b"", header if header is not None else header_proto())]
    for name, (dtype, shape, payload) in tensors.items():
        items.append((name.encode(), entry_proto(DT[dtype], shape, offset=len(data), size=len(payload),
                                                 crc=masked_crc(payload))))
        data += payload
    items.extend(extra)
    items.sort(key=lambda item: item[0])
    Path(f"{prefix}.index").write_bytes(sstable(items))
    Path(f"{prefix}.data-00000-of-00001").write_bytes(bytes(data))
    return prefix
