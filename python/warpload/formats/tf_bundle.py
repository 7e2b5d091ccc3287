"""TensorFlow tensor bundles (prefix.index + prefix.data-SSSSS-of-NNNNN, TF1 and TF2) as plan records, no TF needed."""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Optional, Union

from .. import constants
from .._native import core
from ..dtypes import DTYPES, element_count
from ..errors import CheckpointNotFoundError, TensorBundleError, UnsupportedDtypeError, UnsupportedFormatError
from ..plan import TensorRecord
from .registry import CheckpointContents, Format, UnsupportedTensor, check_unsupported, register
from .tf_dtypes import DT_STRING, DT_VARIANT, OBJECT_GRAPH_KEY, TF_DTYPE_NAMES, TF_TO_DTYPE, unsupported_reason

PathLike = Union[str, "os.PathLike[str]"]

INDEX_SUFFIX = ".index"
# The file that tf.train.CheckpointManager / Saver write beside bundles (CheckpointState, text format).
CHECKPOINT_STATE_NAME = "checkpoint"
# The prefix transformers looks for (TF1_CHECKPOINT_INDEX_NAME without .index), and a SavedModel's bundle folder
# (saved_model.pb beside variables/variables.index).
TRANSFORMERS_BUNDLE_PREFIX = constants.TF1_CHECKPOINT_INDEX_NAME[: -len(INDEX_SUFFIX)]
SAVED_MODEL_VARIABLES = "variables"
# tsl/lib/io/format.h kTableMagicNumber 0xdb4775248b80fb57, little-endian, in the last 8 bytes.
TABLE_MAGIC = bytes.fromhex("57fb808b247547db")
FOOTER_BYTES = 48
# tensor_bundle.cc kTensorBundleVersion: readers refuse min_consumer above it or it in bad_consumers.
TENSOR_BUNDLE_VERSION = 1

_SHARD_NAME = "{prefix}.data-{shard:05d}-of-{count:05d}"
_CHECKPOINT_PATH = re.compile(r'^model_checkpoint_path:\s*"((?:[^"\\]|\\.)*)"\s*$', re.MULTILINE)


@dataclass(frozen=True)
class BundleEntry:
    """One entry of a bundle's .index as stored, whatever its dtype (for listings such as `warpload inspect`).

    kind is "tensor" (numeric, loadable), "string", "variant", "sliced" (a partitioned variable: shape and slices
    only), "slice" (one stored part of a sliced variable; its key is an OrderedCode string, not a
    name) or "unsupported" (a dtype torch has no equivalent for, e.g. DT_QINT8: unsupported_reason). For a
    sliced entry path/offset/nbytes mean nothing and slices lists (start, length) per
    dimension, length -1 meaning the whole dimension.
    """

    name: str
    kind: str
    tf_dtype: str               # TF enum name, e.g. DT_FLOAT
    dtype: Optional[str]        # warpload dtype name (dtypes.DTYPES), None when torch has none
    shape: tuple[int, ...]
    path: str                   # the data shard holding the bytes
    shard_id: int
    offset: int
    nbytes: int
    crc32c: int                 # masked crc32c of the stored bytes
    slices: tuple[tuple[tuple[int, int], ...], ...] = ()


def _has_table_magic(index_path: str) -> bool:
    try:
        with open(index_path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            if size < FOOTER_BYTES:
                return False
            handle.seek(size - len(TABLE_MAGIC))
            return handle.read(len(TABLE_MAGIC)) == TABLE_MAGIC
    except OSError:
        return False


def is_tensor_bundle(path: PathLike) -> bool:
    """Whether path is a bundle prefix ('.../model.ckpt') or its '.index' file (an SSTable by its magic)."""
    text = os.fspath(path)
    if text.endswith(INDEX_SUFFIX) and os.path.isfile(text):
        return _has_table_magic(text)
    return os.path.isfile(text + INDEX_SUFFIX) and _has_table_magic(text + INDEX_SUFFIX)


def _state_file_bundle(folder: str) -> Optional[str]:
    """The bundle the folder's `checkpoint` file names as the latest, if the file exists and that bundle does."""
    state_path = os.path.join(folder, CHECKPOINT_STATE_NAME)
    if not os.path.isfile(state_path):
        return None
    with open(state_path, encoding="utf-8", errors="replace") as handle:
        match = _CHECKPOINT_PATH.search(handle.read())
    if not match:
        return None
    # Text-format escapes (\" and octal UTF-8 bytes such as \303\251) back to the UTF-8 name.
    named = match.group(1).encode("utf-8").decode("unicode_escape").encode("latin-1").decode(
        "utf-8", "surrogateescape")
    # TF1 Saver writes the path it was given, often absolute on another machine: fall back to
    # the same file name in this folder.
    for candidate in (os.path.join(folder, named), os.path.join(folder, os.path.basename(named))):
        if is_tensor_bundle(candidate):
            return candidate
    return None


def bundles_in_folder(folder: PathLike) -> list[str]:
    """Every bundle prefix in the folder and in its `variables/` subfolder (a SavedModel's), sorted."""
    folder = os.fspath(folder)
    prefixes = []
    for where in (folder, os.path.join(folder, SAVED_MODEL_VARIABLES)):
        if os.path.isdir(where):
            prefixes += [os.path.join(where, name[: -len(INDEX_SUFFIX)]) for name in sorted(os.listdir(where))
                         if name.endswith(INDEX_SUFFIX) and is_tensor_bundle(os.path.join(where, name))]
    return prefixes


def bundle_in_folder(folder: PathLike) -> Optional[str]:
    """The bundle prefix a folder holds, under any name: transformers' model.ckpt, else the one its `checkpoint`
    file names, else its only bundle (SavedModel's variables/variables included); None if it has none.

    Raises CheckpointNotFoundError naming them all when there are several and nothing says which.
    """
    folder = os.fspath(folder)
    if is_tensor_bundle(os.path.join(folder, TRANSFORMERS_BUNDLE_PREFIX)):
        return os.path.join(folder, TRANSFORMERS_BUNDLE_PREFIX)
    named = _state_file_bundle(folder)
    if named is not None:
        return named
    prefixes = bundles_in_folder(folder)
    if len(prefixes) <= 1:
        return prefixes[0] if prefixes else None
    names = [os.path.relpath(prefix, folder) for prefix in prefixes]
    raise CheckpointNotFoundError(
        f"{folder}: {len(names)} TensorFlow checkpoints ({', '.join(names)}) and nothing says which to load; name "
        f"one in a `{CHECKPOINT_STATE_NAME}` file (model_checkpoint_path: \"{names[-1]}\"), as TensorFlow's "
        f"CheckpointManager writes it, or pass its .index file (e.g. {prefixes[-1]}{INDEX_SUFFIX})")


def bundle_prefix(path: PathLike) -> str:
    """The bundle prefix for 'x.index', 'x', or a folder holding one bundle (see bundle_in_folder).

    Raises CheckpointNotFoundError when there is no bundle there.
    """
    text = os.fspath(path)
    if os.path.isdir(text):
        prefix = bundle_in_folder(text)
        if prefix is None:
            raise CheckpointNotFoundError(
                f"{text}: no TensorFlow checkpoint (no *.index file, here or in {SAVED_MODEL_VARIABLES}/); pass the "
                f"checkpoint prefix, e.g. {os.path.join(text, TRANSFORMERS_BUNDLE_PREFIX)}")
        return prefix
    if text.endswith(INDEX_SUFFIX) and os.path.isfile(text):
        text = text[: -len(INDEX_SUFFIX)]
    if not os.path.isfile(text + INDEX_SUFFIX):
        if os.path.isfile(text) and _has_table_magic(text):
            # TF < 0.12 wrote one SSTable of TensorSliceWriter records, with no .index (formats.md 3.1).
            raise UnsupportedFormatError(
                f"{text}: a TensorFlow V1 checkpoint (one file, TF < 0.12), which warpload does not read; "
                "restore it with TensorFlow and save it again (tf.train.Saver writes V2 bundles)", path=text)
        raise CheckpointNotFoundError(f"{text}: no TensorFlow checkpoint: {text}{INDEX_SUFFIX} is missing")
    return text


def _name(key: bytes) -> str:
    # surrogateescape keeps any key byte-exact, so read_string_tensor(name) finds it again.
    return key.decode("utf-8", "surrogateescape")


@dataclass(frozen=True)
class _Index:
    prefix: str
    num_shards: int
    entries: tuple[BundleEntry, ...]
    raw: dict[bytes, BundleEntry]  # by stored key, slice entries included


def _read_index(prefix: str) -> _Index:
    """The parsed .index: header checked (version, endianness, shard count), entries with their shard paths."""
    index_path = prefix + INDEX_SUFFIX
    (num_shards, endianness, producer, min_consumer, bad_consumers), rows = core().tf_bundle_index(index_path)
    if min_consumer > TENSOR_BUNDLE_VERSION or TENSOR_BUNDLE_VERSION in bad_consumers:
        raise UnsupportedFormatError(
            f"{index_path}: bundle version {producer} needs a reader of version >= {min_consumer} (bad: "
            f"{bad_consumers}); warpload reads version {TENSOR_BUNDLE_VERSION}, as TensorFlow 2.15 does",
            path=index_path)
    if endianness != 0:
        raise UnsupportedFormatError(
            f"{index_path}: the tensors were written {'big' if endianness == 1 else f'endianness {endianness}'}"
            "-endian; "
            "warpload reads little-endian bundles. Load it with TensorFlow on the machine that wrote it and re-save "
            "it (safetensors files are always little-endian)", path=index_path)
    if rows and num_shards < 1:
        raise TensorBundleError(f"{index_path}: the header says {num_shards} data shards, but there are entries",
                                path=index_path)
    entries = []
    raw = {}
    paths: dict[int, str] = {}
    for key, tf_dtype, shape, shard_id, offset, size, crc, slices in rows:  # shapes and ranges checked in C++
        dtype = TF_TO_DTYPE.get(tf_dtype)
        if key.startswith(b"\x00"):
            kind = "slice"
        elif slices:
            kind = "sliced"
        elif tf_dtype == DT_STRING:
            kind = "string"
        elif tf_dtype == DT_VARIANT:
            kind = "variant"
        else:
            kind = "tensor" if dtype is not None else "unsupported"
        path = paths.get(shard_id)
        if path is None:
            path = paths[shard_id] = _SHARD_NAME.format(prefix=prefix, shard=shard_id, count=num_shards)
        entry = BundleEntry(
            _name(key), kind, TF_DTYPE_NAMES.get(tf_dtype) or f"DataType {tf_dtype}", dtype, shape, path, shard_id,
            offset, size, crc, tuple(tuple(map(tuple, extents)) for extents in slices) if slices else ())
        entries.append(entry)
        raw[key] = entry
    return _Index(prefix, num_shards, tuple(entries), raw)


def read_bundle_entries(prefix: PathLike) -> list[BundleEntry]:
    """Every entry of the bundle's .index in key order: tensors, strings, slices, unsupported dtypes.

    Only the .index is read. Raises TensorBundleError for a corrupt .index, UnsupportedFormatError for
    a big-endian or too new bundle, CheckpointNotFoundError when there is no bundle.
    """
    return list(_read_index(bundle_prefix(prefix)).entries)


class _ShardSizes:
    """Data shard sizes, each looked up once; a missing shard is an error naming it."""

    def __init__(self, index_path: str) -> None:
        self.index_path = index_path
        self.sizes: dict[str, int] = {}

    def check(self, entry: BundleEntry, name: str) -> None:
        size = self.sizes.get(entry.path)
        if size is None:
            try:
                size = self.sizes[entry.path] = os.path.getsize(entry.path)
            except OSError as err:
                raise CheckpointNotFoundError(
                    f"{self.index_path}: tensor {name!r} is in data shard {entry.path}, which cannot be read ({err})"
                ) from err
        if entry.offset + entry.nbytes > size:
            raise TensorBundleError(
                f"{entry.path}: tensor {name!r} ends at byte {entry.offset + entry.nbytes}, the file has {size}; "
                "the data shard is truncated or belongs to another checkpoint",
                path=entry.path, tensor=name, offset=entry.offset)


def _expected_nbytes(entry: BundleEntry, index_path: str) -> int:
    # tensor_bundle.cc GetValue: "Invalid size in bundle entry" unless size == nelements * itemsize.
    nbytes = element_count(entry.shape) * DTYPES[entry.dtype].bits // 8
    if entry.nbytes != nbytes:
        raise TensorBundleError(
            f"{index_path}: tensor {entry.name!r} ({entry.tf_dtype}, shape {list(entry.shape)}) should hold {nbytes} "
            f"bytes, its entry says {entry.nbytes}", path=index_path, tensor=entry.name)
    return nbytes


def _encode_slice_key(name: str, extents: tuple[tuple[int, int], ...]) -> bytes:
    """The key of one stored slice: saved_tensor_slice_util.cc EncodeTensorNameSlice, in OrderedCode."""

    def unsigned(value: int) -> bytes:  # OrderedCode::WriteNumIncreasing: length byte + big-endian bytes
        body = value.to_bytes((value.bit_length() + 7) // 8, "big")
        return bytes([len(body)]) + body

    def signed(value: int) -> bytes:  # OrderedCode::WriteSignedNumIncreasing
        magnitude = ~value if value < 0 else value
        length = (magnitude.bit_length() + 7) // 7  # payload bits + sign bit, 7 per byte
        header = ((1 << length) - 1) << (7 * length)  # `length` leading one bits
        return ((value % (1 << (8 * length))) ^ header).to_bytes(length, "big")

    escaped = name.encode("utf-8", "surrogateescape").replace(b"\xff", b"\xff\x00").replace(b"\x00", b"\x00\xff")
    key = unsigned(0) + escaped + b"\x00\x01" + unsigned(len(extents))
    for start, length in extents:
        key += signed(start) + signed(length)
    return key


def _sliced_record(index: _Index, entry: BundleEntry, shards: _ShardSizes) -> TensorRecord:
    """One record for a partitioned variable whose slices are whole row ranges stored back to back.

    A TensorRecord is one byte range of one file, and the engine copies byte ranges. That covers
    what TF's partitioners write in practice, axis-0 partitions saved in order (the
    `bundle_dtypes/sliced` fixture: rows 0:2 at offset 0, rows 2:4 at offset 48), with no copy and
    zero-copy loads still possible. Other layouts (column partitions, slices in other shards or
    out of order) would need a gather step the plan does not have; they are refused by name
    rather than loaded wrong.
    """
    index_path = index.prefix + INDEX_SUFFIX
    rank = len(entry.shape)
    parts = []
    for extents in entry.slices:
        if len(extents) != rank:
            raise TensorBundleError(f"{index_path}: a slice of {entry.name!r} has {len(extents)} dimensions, "
                                    f"the tensor has {rank}", path=index_path, tensor=entry.name)
        stored = index.raw.get(_encode_slice_key(entry.name, extents))
        if stored is None:
            raise TensorBundleError(f"{index_path}: slice {list(extents)} of {entry.name!r} has no stored entry",
                                    path=index_path, tensor=entry.name)
        parts.append((extents, stored))
    refuse = UnsupportedFormatError(
        f"{index_path}: {entry.name!r} is a partitioned variable whose slices {[list(e) for e, _ in parts]} are not "
        "consecutive row ranges stored back to back; warpload reads only that layout. Restore it with TensorFlow "
        "and save it unpartitioned", path=index_path, tensor=entry.name)
    if rank == 0 or not parts:
        raise refuse
    parts.sort(key=lambda part: part[0][0][0])
    row, end = 0, parts[0][1].offset
    for extents, stored in parts:
        start, length = extents[0]
        length = entry.shape[0] - start if length == -1 else length
        whole_rows = all(extent in ((0, -1), (0, dim)) for extent, dim in zip(extents[1:], entry.shape[1:]))
        if (start != row or not whole_rows or stored.path != parts[0][1].path or stored.offset != end
                or stored.dtype != entry.dtype or stored.shape != (length,) + entry.shape[1:]):
            raise refuse
        _expected_nbytes(stored, index_path)
        shards.check(stored, entry.name)
        row, end = start + length, stored.offset + stored.nbytes
    if row != entry.shape[0]:
        raise refuse
    first = parts[0][1]
    return TensorRecord(entry.name, entry.dtype, entry.shape, first.path, first.offset, end - first.offset)


@dataclass(frozen=True)
class BundleContents:
    """A bundle's numeric tensors as records, and the tensors torch has no dtype for."""

    path: str  # the .index file
    records: tuple[TensorRecord, ...]
    unsupported: tuple[UnsupportedTensor, ...]


_TF_CODES = {name: code for code, name in TF_DTYPE_NAMES.items()}


def read_tensor_bundle(prefix: PathLike, *, verify_checksums: bool = False,
                       skip_unsupported: bool = False) -> list[TensorRecord]:
    """One record per numeric tensor of a bundle, named by its raw TF key, in key order.

    The TF2 object graph (`_CHECKPOINTABLE_OBJECT_GRAPH`, a string the checkpoint describes itself with) and
    variants (dataset iterators) are left out (read_bundle_entries lists them). Partitioned variables become
    one record (see _sliced_record). Offsets are often unaligned (the writer does not pad). With
    verify_checksums=True every tensor's bytes are read and checked against its stored crc32c, in parallel,
    as TensorFlow always does.

    Raises UnsupportedDtypeError naming every tensor torch has no dtype for (strings, quantized and 4-bit
    types: unsupported_reason) unless skip_unsupported=True leaves them out; TensorBundleError for a corrupt
    .index, an inconsistent entry or a checksum mismatch; CheckpointNotFoundError for a missing bundle or
    data shard; UnsupportedFormatError for big-endian bundles and unsupported partitionings.
    """
    contents = read_bundle_contents(prefix, verify_checksums=verify_checksums)
    check_unsupported(contents.path, contents.unsupported, skip_unsupported)
    return list(contents.records)


def read_bundle_contents(prefix: PathLike, *, verify_checksums: bool = False) -> BundleContents:
    """read_tensor_bundle's records and the entries it refuses, for callers that decide themselves."""
    index = _read_index(bundle_prefix(prefix))
    index_path = index.prefix + INDEX_SUFFIX
    shards = _ShardSizes(index_path)
    records = []
    unsupported = []
    checked: list[BundleEntry] = []
    for entry in index.entries:
        if entry.kind in ("slice", "variant") or (entry.kind == "string" and entry.name == OBJECT_GRAPH_KEY):
            continue
        if entry.dtype is None:
            reason = unsupported_reason(_TF_CODES.get(entry.tf_dtype, -1))
            unsupported.append(UnsupportedTensor(entry.name, entry.tf_dtype, reason))
            continue
        if entry.kind == "sliced":
            records.append(_sliced_record(index, entry, shards))
            checked.extend(index.raw[_encode_slice_key(entry.name, s)] for s in entry.slices)
            continue
        _expected_nbytes(entry, index_path)
        shards.check(entry, entry.name)
        records.append(TensorRecord(entry.name, entry.dtype, entry.shape, entry.path, entry.offset, entry.nbytes))
        checked.append(entry)
    if verify_checksums:
        _verify_checksums(checked)
    return BundleContents(index_path, tuple(records), tuple(unsupported))


def _verify_checksums(entries: list[BundleEntry]) -> None:
    paths = sorted({entry.path for entry in entries})
    file_index = {path: i for i, path in enumerate(paths)}
    files = [core().File(path) for path in paths]
    jobs = [(file_index[e.path], e.offset, e.nbytes, e.crc32c) for e in entries]
    bad = core().tf_bundle_first_bad_checksum(files, jobs, constants.num_threads())
    if bad >= 0:
        entry = entries[bad]
        raise TensorBundleError(
            f"{entry.path}: tensor {entry.name!r} (bytes {entry.offset}..{entry.offset + entry.nbytes}) does not match "
            "its crc32c in the .index: the data shard is corrupt", path=entry.path, tensor=entry.name,
            offset=entry.offset)


def read_string_tensor(prefix: PathLike, name: str) -> list[bytes]:
    """The elements of DT_STRING tensor `name`, flattened (e.g. the TF2 `_CHECKPOINTABLE_OBJECT_GRAPH`).

    Both stored checksums (lengths and whole tensor) are always checked. Raises KeyError for an
    unknown name, TypeError if the tensor is not a string tensor, TensorBundleError for corrupt bytes.
    """
    index = _read_index(bundle_prefix(prefix))
    entry = index.raw.get(name.encode("utf-8", "surrogateescape"))
    if entry is None or entry.kind == "slice":
        raise KeyError(f"{index.prefix}{INDEX_SUFFIX}: no tensor named {name!r}")
    if entry.kind != "string":
        raise UnsupportedDtypeError(
            f"{index.prefix}{INDEX_SUFFIX}: {name!r} is a {entry.tf_dtype} tensor, not DT_STRING")
    _ShardSizes(index.prefix + INDEX_SUFFIX).check(entry, name)
    count = element_count(entry.shape)
    if count > entry.nbytes:  # each element stores at least a one-byte length
        raise TensorBundleError(f"{entry.path}: string tensor {name!r} of shape {list(entry.shape)} cannot fit in "
                                f"{entry.nbytes} bytes", path=entry.path, tensor=name, offset=entry.offset)
    data = core().File(entry.path).read(entry.offset, entry.nbytes)
    return core().tf_bundle_strings(data, count, entry.crc32c, entry.path,
                                     name.encode("utf-8", "surrogateescape"), entry.offset)


def _read_contents(path: str) -> CheckpointContents:
    contents = read_bundle_contents(path)
    return CheckpointContents(contents.records, None, contents.unsupported)


register(Format("tf-bundle", lambda head, size: False, _read_contents, sniff_path=is_tensor_bundle))
