"""Zip archives as torch.save writes them: the central directory (zip64 included) and bounds-checked records."""
from __future__ import annotations

import os
import struct
import zlib
from typing import Any, Iterable, Optional

from ..constants import ZIP_MAX_CENTRAL_DIRECTORY_BYTES
from ..errors import CheckpointError, UnsupportedFormatError
from ..plan import frozen_record

# PKWARE APPNOTE.TXT 4.3.7 (local header), 4.3.12 (central directory), 4.3.14-4.3.16 (zip64 end
# records); formats.md 2.1.
_LOCAL = struct.Struct("<4s5H3L2H")
_CENTRAL = struct.Struct("<4s6H3L5H2L")
_END = struct.Struct("<4s4H2LH")
_ZIP64_LOCATOR = struct.Struct("<4sLQL")
_ZIP64_END = struct.Struct("<4sQ2H2L4Q")
_LOCAL_SIGNATURE = b"PK\x03\x04"
_CENTRAL_SIGNATURE = b"PK\x01\x02"
_END_SIGNATURE = b"PK\x05\x06"
_ZIP64_LOCATOR_SIGNATURE = b"PK\x06\x07"
_ZIP64_END_SIGNATURE = b"PK\x06\x06"
_ZIP64_EXTRA_ID = 0x0001
_U16_MAX = 0xFFFF
_U32_MAX = 0xFFFFFFFF
_FLAG_ENCRYPTED = 0x0001
_FLAG_UTF8 = 0x0800
STORED = 0
DEFLATED = 8


@frozen_record
class ZipEntry:
    """One central-directory entry. Sizes come from here: torch writes zeros in local headers (flag 0x08)."""

    name: str
    method: int           # 0 stored, 8 deflated
    crc32: int
    compressed_size: int
    size: int
    header_offset: int    # file offset of the entry's local header


class ZipArchive:
    """An open zip file: its entries by name, in central-directory order, and reads of their data.

    Every offset and size is checked against the file before it is used. Raises CheckpointError
    for a corrupt archive and UnsupportedFormatError for valid zips warpload does not read
    (multi-disk, encrypted).
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd = os.open(path, os.O_RDONLY)
        self._local_headers: dict[int, tuple] = {}  # by header offset, from read_local_headers
        try:
            self.size = os.fstat(self._fd).st_size
            self.central_directory_offset, self.entries = self._read_central_directory()
        except BaseException:
            os.close(self._fd)
            raise

    def __enter__(self) -> "ZipArchive":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def _fail(self, problem: str, offset: Optional[int] = None) -> CheckpointError:
        return CheckpointError(f"{self.path}: {problem}", path=self.path, offset=offset)

    def _pread(self, nbytes: int, offset: int) -> bytes:
        if offset < 0 or nbytes < 0 or offset + nbytes > self.size:
            raise self._fail(f"zip structure at byte {offset} ({nbytes} bytes) runs past the end of the "
                             f"file ({self.size} bytes); the file is truncated or corrupt", offset)
        data = os.pread(self._fd, nbytes, offset)
        while len(data) < nbytes:  # a short read: the file shrank, or a read above Linux's 2 GiB cap
            chunk = os.pread(self._fd, nbytes - len(data), offset + len(data))
            if not chunk:
                raise self._fail(f"the file shrank while being read (at byte {offset + len(data)})",
                                 offset + len(data))
            data += chunk
        return data

    def _read_central_directory(self) -> tuple[int, dict[str, ZipEntry]]:
        end_offset, end = self._find_end_record()
        _, disk, cd_disk, _, count, cd_size, cd_offset, _ = end
        cd_limit = end_offset
        locator_offset = end_offset - _ZIP64_LOCATOR.size
        if locator_offset >= 0:
            locator = _ZIP64_LOCATOR.unpack(self._pread(_ZIP64_LOCATOR.size, locator_offset))
            if locator[0] == _ZIP64_LOCATOR_SIGNATURE:
                zip64_offset = locator[2]
                if zip64_offset + _ZIP64_END.size > locator_offset:
                    raise self._fail(f"zip64 end record offset {zip64_offset} is not before its locator "
                                     f"(byte {locator_offset})", locator_offset)
                zip64 = _ZIP64_END.unpack(self._pread(_ZIP64_END.size, zip64_offset))
                if zip64[0] != _ZIP64_END_SIGNATURE:
                    raise self._fail(f"no zip64 end record at byte {zip64_offset}, where the locator points",
                                     zip64_offset)
                _, _, _, _, disk, cd_disk, _, count, cd_size, cd_offset = zip64
                cd_limit = zip64_offset
        if disk not in (0, _U16_MAX) or cd_disk not in (0, _U16_MAX):
            raise UnsupportedFormatError(f"{self.path}: a multi-part zip archive; join the parts into one file",
                                         path=self.path)
        if cd_size > ZIP_MAX_CENTRAL_DIRECTORY_BYTES:
            raise self._fail(f"central directory of {cd_size} bytes exceeds the "
                             f"{ZIP_MAX_CENTRAL_DIRECTORY_BYTES}-byte limit; the file is corrupt", end_offset)
        if cd_offset + cd_size > cd_limit:
            raise self._fail(f"central directory [{cd_offset}, {cd_offset + cd_size}) overlaps the end record "
                             f"at byte {cd_limit}; the file is truncated or corrupt", cd_offset)
        if count * _CENTRAL.size > cd_size:
            raise self._fail(f"{count} entries cannot fit in a central directory of {cd_size} bytes", cd_offset)
        directory = self._pread(cd_size, cd_offset)
        entries: dict[str, ZipEntry] = {}
        pos = 0
        for _ in range(count):
            entry, pos = self._parse_entry(directory, pos, cd_offset)
            if entry.name in entries:
                raise self._fail(f"entry {entry.name!r} appears twice in the central directory", cd_offset + pos)
            entries[entry.name] = entry
        return cd_offset, entries

    def _find_end_record(self) -> tuple[int, tuple]:
        # The end record is the last thing in the file, followed by a comment of at most 64 KiB that may
        # itself contain the signature: the record is the one whose comment ends exactly at the end.
        tail_size = min(self.size, _END.size + _U16_MAX)
        tail = self._pread(tail_size, self.size - tail_size)
        pos = tail.rfind(_END_SIGNATURE)
        while pos >= 0:
            if pos + _END.size <= len(tail) and pos + _END.size + _END.unpack_from(tail, pos)[-1] == len(tail):
                return self.size - tail_size + pos, _END.unpack_from(tail, pos)
            pos = tail.rfind(_END_SIGNATURE, 0, pos)
        raise self._fail("no zip end-of-central-directory record: the file is truncated or not a zip archive",
                         self.size)

    def _parse_entry(self, directory: bytes, pos: int, cd_offset: int) -> tuple[ZipEntry, int]:
        if pos + _CENTRAL.size > len(directory):
            raise self._fail("central directory ends inside an entry; the file is corrupt", cd_offset + pos)
        (signature, _, _, flags, method, _, _, crc, compressed, size, name_len, extra_len, comment_len,
         disk, _, _, header_offset) = _CENTRAL.unpack_from(directory, pos)
        if signature != _CENTRAL_SIGNATURE:
            raise self._fail(f"bad central directory entry signature {signature!r}", cd_offset + pos)
        name_start = pos + _CENTRAL.size
        extra_start = name_start + name_len
        next_pos = extra_start + extra_len + comment_len
        if next_pos > len(directory):
            raise self._fail("central directory entry runs past the directory's end", cd_offset + pos)
        raw_name = directory[name_start:extra_start]
        try:
            name = raw_name.decode("utf-8" if flags & _FLAG_UTF8 else "cp437")
        except UnicodeDecodeError as err:
            raise self._fail(f"entry name {raw_name!r} is not valid UTF-8", cd_offset + pos) from err
        if flags & _FLAG_ENCRYPTED:
            raise UnsupportedFormatError(f"{self.path}: entry {name!r} is encrypted; warpload reads plain archives",
                                         path=self.path)
        if _U32_MAX in (compressed, size, header_offset) or disk == _U16_MAX:
            size, compressed, header_offset = self._zip64_fields(
                directory[extra_start:extra_start + extra_len], name, (size, compressed, header_offset),
                cd_offset + pos)
        entry = ZipEntry(name, method, crc, compressed, size, header_offset)
        return entry, next_pos

    def _zip64_fields(self, extra: bytes, name: str, fields: tuple[int, int, int],
                      at: int) -> tuple[int, int, int]:
        """Sizes and offset from the zip64 extra field: it holds, in order, each field saturated at 0xFFFFFFFF."""
        pos = 0
        while pos + 4 <= len(extra):
            header_id, length = struct.unpack_from("<2H", extra, pos)
            pos += 4
            if header_id == _ZIP64_EXTRA_ID:
                values = list(fields)
                cursor = pos
                for i, value in enumerate(fields):
                    if value == _U32_MAX:
                        if cursor + 8 > pos + length or cursor + 8 > len(extra):
                            raise self._fail(f"entry {name!r}: zip64 extra field is too short", at)
                        values[i] = struct.unpack_from("<Q", extra, cursor)[0]
                        cursor += 8
                return values[0], values[1], values[2]
            pos += length
        raise self._fail(f"entry {name!r} has 32-bit fields saturated at 0xFFFFFFFF but no zip64 extra field", at)

    def read_local_headers(self, entries: Iterable[ZipEntry]) -> None:
        """Reads the local headers of `entries` (those inside the file) in one engine call, for data_offset.

        A pread from Python per header cost 6 ms for 6,004 storages; one call that preads them all, 1 ms.
        Nothing is checked here: data_offset checks each header it uses.
        """
        from .._native import core

        offsets = [entry.header_offset for entry in entries if entry.header_offset <= self.size - _LOCAL.size]
        if offsets:
            raw = core().File(self.path).read_spans(offsets, _LOCAL.size)
            self._local_headers.update(zip(offsets, _LOCAL.iter_unpack(raw)))

    def data_offset(self, entry: ZipEntry) -> int:
        """File offset of the entry's data: after its local header, whose name and extra lengths differ from
        the central directory's (torch pads the local extra field to align data to 64 bytes)."""
        header = self._local_headers.get(entry.header_offset)
        if header is None:
            header = _LOCAL.unpack(self._pread(_LOCAL.size, entry.header_offset))
        signature, *_, name_len, extra_len = header
        if signature != _LOCAL_SIGNATURE:
            raise self._fail(f"entry {entry.name!r}: no local header at byte {entry.header_offset}",
                             entry.header_offset)
        start = entry.header_offset + _LOCAL.size + name_len + extra_len
        if start + entry.compressed_size > self.central_directory_offset:
            raise self._fail(
                f"entry {entry.name!r}: data [{start}, {start + entry.compressed_size}) runs into the central "
                f"directory at byte {self.central_directory_offset}; the file is truncated or corrupt", start)
        return start

    def read(self, entry: ZipEntry, limit: int) -> bytes:
        """The entry's uncompressed bytes (stored or deflated), CRC-checked; at most `limit` bytes."""
        if entry.size > limit:
            raise self._fail(f"entry {entry.name!r} is {entry.size} bytes, above the {limit}-byte limit for it; "
                             "the file is corrupt or hostile", entry.header_offset)
        raw = self._pread(entry.compressed_size, self.data_offset(entry))
        if entry.method == STORED:
            data = raw
        elif entry.method == DEFLATED:
            inflater = zlib.decompressobj(-zlib.MAX_WBITS)
            try:
                data = inflater.decompress(raw, entry.size + 1)
            except zlib.error as err:
                raise self._fail(f"entry {entry.name!r}: corrupt deflate data ({err})", entry.header_offset) from err
        else:
            raise UnsupportedFormatError(
                f"{self.path}: entry {entry.name!r} uses zip compression method {entry.method}; "
                "warpload reads stored and deflated entries", path=self.path)
        if len(data) != entry.size:
            raise self._fail(f"entry {entry.name!r} holds {len(data)} bytes, its directory entry says {entry.size}",
                             entry.header_offset)
        if zlib.crc32(data) != entry.crc32:
            raise self._fail(f"entry {entry.name!r} fails its CRC-32 check; the file is corrupt",
                             entry.header_offset)
        return data
