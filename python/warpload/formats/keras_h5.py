"""Keras HDF5 weights (tf_model.h5, sharded tf_model-0000i-of-0000N.h5): h5py reads the metadata, the engine the bytes.

formats.md section 4. h5py is an optional dependency, imported on first use. Each dataset that is
one plain little-endian byte range of the file (contiguous layout, no filters, no external storage,
storage allocated and as large as the tensor: 4.4) becomes a TensorRecord the engine reads in
place. Every other dataset (chunked, compressed, compact, big-endian, unwritten) becomes an
H5Dataset: a plain description that `read_dataset` turns into an array through h5py. Keras and
transformers never write those, so the fallback is for foreign files, and it stays a separate,
visible kind of source rather than a hidden copy.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterator, Optional, Union

from ..dtypes import DTYPES, element_count
from ..errors import CheckpointError, UnsupportedFormatError, WarploadError
from ..plan import TensorRecord
from .hdf5_heap import check_global_heaps
from .registry import CheckpointContents, Format, UnsupportedTensor, register

if TYPE_CHECKING:
    import numpy

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
INSTALL_HINT = "reading Keras .h5 checkpoints needs h5py: pip install h5py"
# numpy dtype kind + itemsize -> safetensors dtype name.
_NUMPY_DTYPES = {("f", 2): "F16", ("f", 4): "F32", ("f", 8): "F64", ("i", 1): "I8", ("i", 2): "I16", ("i", 4): "I32",
                 ("i", 8): "I64", ("u", 1): "U8", ("u", 2): "U16", ("u", 4): "U32", ("u", 8): "U64", ("b", 1): "BOOL",
                 ("c", 8): "C64", ("c", 16): "C128"}
# What h5py (and the HDF5 library under it) raises for a damaged file: OSError for most ("Can't synchronously
# read data", "bad heap pointer"), KeyError for a broken link, TypeError and ValueError for a damaged
# datatype or dataspace, UnicodeError for a name that is not UTF-8, RuntimeError from h5py's own checks.
H5PY_ERRORS = (OSError, KeyError, TypeError, ValueError, UnicodeError, RuntimeError, IndexError, AttributeError)


@dataclass(frozen=True)
class H5Dataset:
    """A dataset the engine cannot read as one byte range; `read_dataset` reads it through h5py."""

    name: str
    dtype: str  # safetensors dtype name of the values (native byte order)
    shape: tuple[int, ...]
    path: str
    dataset: str  # the dataset's HDF5 path inside the file
    reason: str   # why it is not a plain record: "chunked", "compressed", "big-endian", ...

    @property
    def nbytes(self) -> int:
        return element_count(self.shape) * DTYPES[self.dtype].bits // 8


H5Tensor = Union[TensorRecord, H5Dataset]


@dataclass(frozen=True)
class KerasH5Contents:
    """The datasets of one h5 file, in the file's weight order, under their stored names.

    `stripped` is True for the flat layout of sharded files, whose names lack the Keras model's
    name level (`transformer/h_._0/...`); the unsharded layout stores full runtime names
    (`tfgpt2lm_head_model/transformer/h_._0/...`).
    """

    tensors: tuple[H5Tensor, ...]
    stripped: bool
    unsupported: tuple[UnsupportedTensor, ...] = ()  # datasets torch has no dtype for (strings, records)


def sniff(head: bytes, size: int) -> bool:
    return head.startswith(HDF5_MAGIC)


def is_hdf5(path: str) -> bool:
    """Whether the file is HDF5: the signature at 0, or after a user block (512, 1024, 2048, ... bytes)."""
    with open(path, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        offset = 0
        while offset + len(HDF5_MAGIC) <= size:
            handle.seek(offset)
            if handle.read(len(HDF5_MAGIC)) == HDF5_MAGIC:
                return True
            offset = 512 if offset == 0 else offset * 2
    return False


def import_h5py() -> Any:
    try:
        import h5py
    except ImportError as err:
        raise ImportError(INSTALL_HINT) from err
    return h5py


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _string_list(attrs: Any, name: str) -> list[str]:
    """An attribute holding a list of names, also when Keras split it into name0, name1, ... (tf_utils.py
    save_attributes_to_hdf5_group: one HDF5 object header holds at most 64512 bytes). An empty list may be
    stored as an empty float64 array (the first shard of a sharded checkpoint, 4.2)."""
    if name in attrs:
        return [_text(value) for value in attrs[name]]
    values: list[str] = []
    chunk = 0
    while f"{name}{chunk}" in attrs:
        values += [_text(value) for value in attrs[f"{name}{chunk}"]]
        chunk += 1
    return values


@dataclass
class H5Place:
    """The object (group or dataset path) a read of an h5 file is at, for the error a failure there becomes."""

    name: Optional[str] = None


@contextmanager
def h5_errors(path: str, place: Optional[str] = None) -> Iterator[H5Place]:
    """Turns every h5py failure inside the block into a CheckpointError naming the file and the object being
    read (the block sets `.name` of the H5Place it gets as it moves on), chained to h5py's error; warpload's
    own errors pass through."""
    where = H5Place(place)
    try:
        yield where
    except WarploadError:
        raise
    except H5PY_ERRORS as err:
        what = f"/{where.name.lstrip('/')}" if where.name else "the file"
        raise CheckpointError(
            f"{path}: HDF5 cannot read {what} ({type(err).__name__}: {err}); the file is damaged or not a Keras "
            "weights file: download or save it again", path=path, tensor=where.name) from err


def read_keras_h5(path: str) -> KerasH5Contents:
    """The weights of a Keras h5 file: unsharded (per-layer groups with weight_names) or one shard (flat).

    Raises ImportError without h5py, CheckpointError for a file HDF5 cannot open or read (truncated, corrupt,
    naming the dataset where known) or whose name lists point at missing datasets.
    """
    h5py = import_h5py()
    file_size = os.path.getsize(path)
    with h5_errors(path) as where:
        with h5py.File(path, "r") as handle:
            check_global_heaps(path, handle, file_size)
            attrs = handle.attrs
            layer_names = _string_list(attrs, "layer_names")
            stripped = "backend" not in attrs and "keras_version" not in attrs
            if stripped:
                # Sharded layout: layer_names are dataset paths (modeling_tf_utils.py save_pretrained, 4.2).
                locations = [(name, name) for name in layer_names]
            else:
                locations = []
                for layer in layer_names:
                    where.name = layer
                    locations += [(weight, f"{layer}/{weight}") for weight in _string_list(handle[layer].attrs,
                                                                                            "weight_names")]
            tensors = []
            unsupported = []
            for name, location in locations:
                where.name = location
                dataset = handle.get(location)
                if not isinstance(dataset, h5py.Dataset):
                    raise CheckpointError(f"{path}: weight {name!r} is listed but there is no dataset /{location}",
                                          path=path, tensor=name)
                tensor = _tensor(h5py, path, file_size, name, dataset)
                (unsupported if isinstance(tensor, UnsupportedTensor) else tensors).append(tensor)
    return KerasH5Contents(tuple(tensors), stripped, tuple(unsupported))


def _tensor(h5py: Any, path: str, file_size: int, name: str, dataset: Any) -> Union[H5Tensor, UnsupportedTensor]:
    """A plain record when the dataset's bytes are exactly file[offset : offset + nbytes] (4.4), else an H5Dataset;
    an UnsupportedTensor for values torch has no dtype for."""
    numpy_dtype = dataset.dtype
    dtype = _NUMPY_DTYPES.get((numpy_dtype.kind, numpy_dtype.itemsize))
    if dtype is None or numpy_dtype.fields is not None:
        return UnsupportedTensor(name, str(numpy_dtype), f"dataset {dataset.name} does not hold numbers")
    shape = tuple(int(size) for size in dataset.shape)
    nbytes = element_count(shape) * numpy_dtype.itemsize
    plist = dataset.id.get_create_plist()
    reason = None
    if plist.get_layout() == h5py.h5d.CHUNKED:
        reason = "chunked"
    elif plist.get_layout() != h5py.h5d.CONTIGUOUS:
        reason = "compact"
    elif plist.get_nfilters() or plist.get_external_count():
        reason = "filtered or external"
    elif numpy_dtype.byteorder == ">":
        reason = "big-endian"
    offset = dataset.id.get_offset()
    if reason is None and nbytes:
        # Unwritten data has storage size 0 and a bogus offset (4.4): its value is the fill value.
        if offset is None or dataset.id.get_storage_size() != nbytes:
            reason = "storage not allocated"
        elif offset + nbytes > file_size:
            raise CheckpointError(f"{path}: dataset {dataset.name} ({nbytes} bytes at offset {offset}) ends past the "
                                  f"end of the file ({file_size} bytes); the file is truncated",
                                  path=path, tensor=name, offset=offset)
    if reason is not None:
        return H5Dataset(name, dtype, shape, path, dataset.name, reason)
    return TensorRecord(name, dtype, shape, path, offset or 0, nbytes)


def read_dataset(item: H5Dataset) -> "numpy.ndarray":
    """The values of a dataset that is not a plain record, as a C-ordered native-endian array."""
    import numpy

    h5py = import_h5py()
    with h5_errors(item.path, item.dataset):
        with h5py.File(item.path, "r") as handle:
            values = numpy.asarray(handle[item.dataset][()])
    if values.shape != item.shape or _NUMPY_DTYPES.get((values.dtype.kind, values.dtype.itemsize)) != item.dtype:
        raise CheckpointError(f"{item.path}: dataset {item.dataset} now holds {values.dtype} {list(values.shape)}, "
                              f"not the {item.dtype} {list(item.shape)} its header said: the file changed while "
                              "it was loaded; load it again", path=item.path, tensor=item.name)
    return numpy.ascontiguousarray(values.astype(values.dtype.newbyteorder("="), copy=False))


def _refuse(path: str) -> CheckpointContents:
    raise UnsupportedFormatError(
        f"{path}: a Keras HDF5 (TensorFlow) checkpoint; its tensors have TensorFlow names and layouts: pass "
        "from_tf=True to load it with PyTorch names", path=path)


register(Format("keras-h5", sniff, _refuse))
