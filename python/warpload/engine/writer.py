"""Writes tensors as safetensors through the C++ core: checked as safetensors.torch checks them, then written with
the GIL released straight from the tensors' memory into the file (or copied in parallel into bytes)."""
from __future__ import annotations

import os
import sys
from array import array
from typing import TYPE_CHECKING, Any, Mapping, Optional, Union

from .. import constants
from .._fileio import write_atomically
from .._native import core
from ..dtypes import SAFETENSORS_DTYPES, dtype_name
from ..errors import (
    HeaderError,
    NoTensorDataError,
    NotAStringError,
    SharedTensorsError,
    UnsavableTensorError,
    UnsupportedDtypeError,
)
from ..formats.safetensors import METADATA_KEY
from ..formats.safetensors_writer import FileLayout, TensorEntry, file_layout
from .shared_storage import find_shared_tensors, storage_span

if TYPE_CHECKING:
    import torch

# csrc/writer.h WriteMethod. On this 2-core VM the three methods are within the noise of fresh page-cache pages
# (benchmarks/save.py, 1.42 GB, RESULTS.md 2026-12-02: the sequential pass led one quiet run 0.31 s to 0.96 s and
# trailed the next 0.82 s to 0.57 s). Buffered writes to one file queue on its inode lock, so threads cannot gain
# much; the single pass makes the fewest syscalls and led in-process at 400 MB (0.256 s vs 0.359 s).
_WRITE_METHOD = 1


def save_file(tensors: Mapping[str, "torch.Tensor"], filename: Union[str, "os.PathLike[str]"],
              metadata: Optional[Mapping[str, str]] = None) -> None:
    """Writes `tensors` to `filename` as safetensors (written next to it, then renamed into place)."""
    layout, sources = checked_layout(tensors, metadata)
    table = piece_table(layout, sources)

    def write(path: str) -> None:
        core().write_file(path, layout.header, table, layout.total_nbytes, method=_WRITE_METHOD,
                          num_threads=constants.num_threads())

    write_atomically(os.fspath(filename), write)


def save(tensors: Mapping[str, "torch.Tensor"], metadata: Optional[Mapping[str, str]] = None) -> bytes:
    """The bytes save_file would write."""
    layout, sources = checked_layout(tensors, metadata)
    return core().write_bytes(layout.header, piece_table(layout, sources), layout.total_nbytes,
                              num_threads=constants.num_threads())


def checked_layout(tensors: Mapping[str, "torch.Tensor"],
                   metadata: Optional[Mapping[str, str]]) -> tuple[FileLayout, dict[str, "torch.Tensor"]]:
    """The file layout and each tensor's host copy (the tensor itself on the CPU), after safetensors.torch's checks
    in its order: the dict, each value a dense tensor, no shared memory, then per tensor contiguity and device."""
    if sys.byteorder != "little":
        raise UnsavableTensorError("warpload writes safetensors (little-endian) on little-endian machines only; "
                                   "use safetensors.torch.save_file on this machine")
    _check_tensor_dict(tensors)
    _check_metadata(metadata)
    shared = [names for names in find_shared_tensors(tensors) if len(names) > 1]
    if shared:
        raise SharedTensorsError(
            f"Some tensors share memory, this will lead to duplicate memory on disk and potential differences when "
            f"loading them again: {shared}. A potential way to correctly save your model is to use "
            "`safetensors.torch.save_model` (it keeps one name of each group and records the others in the metadata), "
            "or to save `tensor.clone()` under all names but one. More information at "
            "https://huggingface.co/docs/safetensors/torch_shared_tensors", groups=shared)
    sources, entries = {}, []
    for name, tensor in tensors.items():
        if not tensor.is_contiguous():
            raise UnsavableTensorError(
                f"You are trying to save a non contiguous tensor: `{name}` which is not allowed. It either means you "
                "are trying to save tensors which are reference of each other in which case it's recommended to save "
                "only the full tensors, and reslice at load time, or simply call `.contiguous()` on your tensor to "
                "pack it before saving.")
        host = _on_host(name, tensor)
        sources[name] = host
        entries.append(_entry(name, host))
    return file_layout(entries, metadata), sources


def _check_tensor_dict(tensors: Any) -> None:
    import torch

    if not isinstance(tensors, dict):
        raise UnsavableTensorError(f"Expected a dict of [str, torch.Tensor] but received {type(tensors)}")
    sparse = []
    for name, value in tensors.items():
        if not isinstance(name, str):
            raise NotAStringError(f"tensor names must be str, got {type(name).__name__} {name!r}")
        if not isinstance(value, torch.Tensor):
            raise UnsavableTensorError(f"Key `{name}` is invalid, expected torch.Tensor but received {type(value)}")
        if value.layout != torch.strided:
            sparse.append(name)
    if sparse:
        raise UnsavableTensorError(
            f"You are trying to save a sparse tensors: `{sparse}` which this library does not support. You can make "
            "it a dense tensor before saving with `.to_dense()` but be aware this might make a much larger file than "
            "needed.")
    if METADATA_KEY in tensors:
        raise UnsavableTensorError(f"a tensor cannot be named {METADATA_KEY!r}: the header keeps that key for the "
                                   "file's metadata, and no reader would load the file; rename the tensor")


def _check_metadata(metadata: Any) -> None:
    if metadata is None:
        return
    if not isinstance(metadata, Mapping):
        raise NotAStringError(f"metadata must be a dict of str to str, got {type(metadata).__name__}")
    for key, value in metadata.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise NotAStringError(f"metadata must map str to str; {key!r}: {value!r} is not (convert it with str() "
                                  "or json.dumps())")


def _on_host(name: str, tensor: "torch.Tensor") -> "torch.Tensor":
    """The tensor in host memory: other devices are copied to the CPU, as safetensors does."""
    if tensor.device.type == "meta":
        raise NoTensorDataError(f"tensor {name!r}: Cannot copy out of meta tensor; no data! Materialize it "
                                "(model.to_empty(device='cpu') and load or initialise it) before saving")
    return tensor if tensor.device.type == "cpu" else tensor.to("cpu")


def _entry(name: str, tensor: "torch.Tensor") -> TensorEntry:
    try:
        dtype = dtype_name(tensor.dtype)
    except UnsupportedDtypeError as err:
        raise UnsupportedDtypeError(f"tensor {name!r}: {err}; safetensors cannot store it either") from err
    if dtype not in SAFETENSORS_DTYPES:
        # complex128 has a warpload dtype (TF bundles and .bin hold it) but no safetensors name: no reader,
        # warpload's included, would load the file.
        raise UnsupportedDtypeError(f"tensor {name!r}: {tensor.dtype} has no safetensors dtype, so no safetensors "
                                    "reader could load the file; save it with torch.save, or convert it (e.g. to "
                                    "two float64 tensors with torch.view_as_real)")
    shape = tuple(tensor.shape)
    if dtype == "F4":
        # torch packs two F4 values per element; the header counts values (safetensors' TensorSpec doubles it).
        if not shape:
            raise HeaderError(f"tensor {name!r}: a 0-dim float4_e2m1fn_x2 tensor holds two values and has no "
                              "logical shape in safetensors; reshape it to (1,)")
        shape = shape[:-1] + (shape[-1] * 2,)
    return TensorEntry(name, dtype, shape, tensor.numel() * tensor.element_size())


def piece_table(layout: FileLayout, sources: Mapping[str, "torch.Tensor"]) -> array:
    """The core's uint64 rows (address, nbytes, file offset), one per tensor in layout order, each checked to lie
    inside its tensor's storage: the core reads exactly these bytes and nothing else."""
    cells: list[int] = []
    for entry, offset in zip(layout.entries, layout.offsets):
        tensor = sources[entry.name]
        address = tensor.data_ptr() if entry.nbytes else 0
        if entry.nbytes:
            base, size = storage_span(tensor)
            if not (base <= address and address + entry.nbytes <= base + size):
                raise UnsavableTensorError(f"tensor {entry.name!r}: its {entry.nbytes} bytes at {address:#x} lie "
                                           f"outside its storage ({size} bytes at {base:#x}); save a .clone()")
        cells += (address, entry.nbytes, offset)
    return array("Q", cells)
