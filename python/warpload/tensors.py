"""The tensor API: load_file, load, safe_open, save_file and save (drop-ins for safetensors'), load_torch
(torch.load(weights_only=True)'s) and load_checkpoint."""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Callable, Optional, Union

from . import engine
from ._native import core
from .dtypes import dtype_name
from .engine.mapped import views_or_copies
from .errors import CheckpointNotFoundError, ClosedFileError, UnknownBackendError, UnsupportedFormatError, ZeroCopyError
from .formats.safetensors import parse_header, read_header
from .gc_pause import without_gc_pauses
from .plan import LoadPlan, TensorRecord, plan_load

if TYPE_CHECKING:
    import torch

PathLike = Union[str, "os.PathLike[str]"]
DeviceLike = Union[str, int, "torch.device"]


def _requested_dtype(dtype: Any) -> Optional[str]:
    return None if dtype is None else dtype_name(dtype)


def _is_cpu(device: DeviceLike) -> bool:
    return str(device) == "cpu"


# safetensors' framework names (bindings/python/src/lib.rs, `impl FromPyObject for Framework`) warpload serves.
_TORCH_FRAMEWORKS = ("pt", "torch", "pytorch")
_NUMPY_FRAMEWORKS = ("np", "numpy")


def _wants_numpy(framework: str, device: DeviceLike) -> bool:
    """Whether `framework` asks for numpy arrays; raises ValueError for a framework warpload does not return, or
    numpy arrays anywhere but on the CPU."""
    if framework in _TORCH_FRAMEWORKS:
        return False
    if framework not in _NUMPY_FRAMEWORKS:
        raise ValueError(f"framework={framework!r}: warpload returns torch tensors (framework='pt') or numpy "
                         "arrays (framework='np')")
    if not _is_cpu(device):
        raise ValueError(f"framework={framework!r} returns numpy arrays, which live on the CPU: drop device="
                         f"{device!r}, or use framework='pt'")
    return True


# safetensors 0.8's `backend=` of load_file and safe_open. warpload's engine picks how each file is read itself
# (WARPLOAD_READ_METHOD, README "Settings"), so both give the same tensors; other values are refused as there.
BACKENDS = ("mmap", "pread")


def _check_backend(backend: str) -> None:
    if backend not in BACKENDS:
        raise UnknownBackendError(f'backend "{backend}" is invalid (expected one of: "mmap", "pread")')


@without_gc_pauses
def load_file(filename: PathLike, device: DeviceLike = "cpu", *, dtype: Any = None, zero_copy: bool = False,
              framework: str = "pt", backend: str = "mmap") -> dict[str, Any]:
    """Loads a safetensors file into a dict of tensors, like `safetensors.torch.load_file`.

    Tensors come in file order, as safetensors returns them, read in parallel into memory they
    own. With `zero_copy=True` (CPU only, no `dtype`) they instead view the memory-mapped file:
    nothing is read until a page is touched, and writes stay private to the process. `dtype`
    converts floating-point tensors (torch's rounding, bit for bit); integer and bool tensors
    keep their dtype. `backend` ("mmap" or "pread") is accepted as safetensors accepts it; the engine
    chooses how to read either way.

    `framework="np"` returns numpy arrays instead (as `safetensors.numpy.load_file`), and torch is
    never imported; bfloat16 and float8 arrays need the ml_dtypes package.

    Raises CheckpointError (HeaderError) for a corrupt file, CheckpointNotFoundError if it is missing,
    UnsupportedDtypeError for a dtype numpy cannot hold.
    """
    _check_backend(backend)
    path = _existing_file(filename)
    header = read_header(path)
    if _wants_numpy(framework, device):
        return _numpy_arrays(path, header.records, dtype, zero_copy)
    plan = plan_load(header.records, _requested_dtype(dtype))
    if zero_copy:
        _check_zero_copy(plan, device)
        return engine.zero_copy_views(plan, {path: core().File(path)})
    return engine.materialize(plan, device)


def _numpy_arrays(path: str, records: list[TensorRecord], dtype: Any, zero_copy: bool) -> dict[str, Any]:
    # Imported here: framework="np" is the one caller, and pays for numpy only.
    from .engine.numpy_arrays import materialize_numpy, numpy_views, safetensors_name

    plan = plan_load(records, None if dtype is None else safetensors_name(dtype))
    if zero_copy:
        _check_zero_copy(plan, "cpu")
        return numpy_views(plan, {path: core().File(path)})
    return materialize_numpy(plan)


BYTES_SOURCE = "<bytes>"  # the "path" of a safetensors buffer passed to load(), in records and errors


@without_gc_pauses
def load(data: bytes) -> dict[str, "torch.Tensor"]:
    """Loads safetensors bytes (what safetensors.torch.save returns) into a dict of tensors, like
    `safetensors.torch.load`: validated as strictly as a file, tensors in file order, owning one copy of the
    data between them. Raises HeaderError (a safetensors.SafetensorError) for invalid bytes."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"load takes the bytes of a safetensors file, got {type(data).__name__}; "
                        "use warpload.load_file for a path")
    owned = bytearray(data)
    header = parse_header(BYTES_SOURCE, owned, len(owned))
    plan = plan_load(header.records)
    return engine.zero_copy_views(plan, {BYTES_SOURCE: owned}) if plan.storages else {}


def save_file(tensors: dict[str, "torch.Tensor"], filename: PathLike,
              metadata: Optional[dict[str, str]] = None) -> None:
    """Saves a dict of tensors to `filename` in safetensors format, like `safetensors.torch.save_file`: the same
    bytes (header, tensor order, alignment), written in parallel by the C++ engine into a temporary file that is
    then renamed over `filename`. Tensors on other devices are copied to the CPU first.

    Raises, as safetensors does: UnsavableTensorError (a ValueError) for no dict, a non-tensor, a sparse or
    non-contiguous tensor; SharedTensorsError (a RuntimeError) for tensors that share memory; NotAStringError (a
    TypeError) for names or metadata that are not str; NoTensorDataError (a RuntimeError) for meta tensors;
    EngineIOError (an OSError) when the write fails.
    """
    from .engine import writer

    writer.save_file(tensors, filename, metadata)


def save(tensors: dict[str, "torch.Tensor"], metadata: Optional[dict[str, str]] = None) -> bytes:
    """The safetensors bytes of a dict of tensors, like `safetensors.torch.save` (what save_file would write);
    raises what save_file raises."""
    from .engine import writer

    return writer.save(tensors, metadata)


def _check_zero_copy(plan: LoadPlan, device: DeviceLike) -> None:
    if not _is_cpu(device) or any(s.converts for s in plan.storages):
        raise ZeroCopyError("zero_copy=True views the file as it is: use device='cpu' and no dtype conversion")


def _existing_file(filename: PathLike) -> str:
    path = os.fspath(filename)
    if not os.path.exists(path):
        raise CheckpointNotFoundError.no_such_file(path)
    if os.path.isdir(path):
        raise IsADirectoryError(f"{path} is a directory; load_file reads one safetensors file "
                                "(use warpload.load_checkpoint for a checkpoint folder)")
    return path


class safe_open:
    """Lazy access to a safetensors file, like `safetensors.safe_open`: reads only what is asked.

    Usable as a context manager; `keys()`, `offset_keys()`, `metadata()`, `get_tensor(name)`,
    `get_tensors()` and `get_slice(name)[...]` behave as in safetensors; `backend` as in load_file.
    """

    def __init__(self, filename: PathLike, framework: str = "pt", device: DeviceLike = "cpu", *,
                 backend: str = "mmap") -> None:
        self._numpy = _wants_numpy(framework, device)
        _check_backend(backend)
        self._path = _existing_file(filename)
        self._device = device
        self._header = read_header(self._path)
        self._records = {r.name: r for r in self._header.records}
        self._file = core().File(self._path)

    def __enter__(self) -> "safe_open":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self._file = None

    def keys(self) -> list[str]:
        self._check_open()
        return sorted(self._records)

    def offset_keys(self) -> list[str]:
        """Tensor names in the order of their bytes in the file."""
        self._check_open()
        return [r.name for r in self._header.records]

    def metadata(self) -> Optional[dict[str, str]]:
        self._check_open()
        return None if self._header.metadata is None else dict(self._header.metadata)

    def _check_open(self) -> None:
        """Every method refuses once the `with` block has closed the file, as safetensors' do; slices taken before
        keep reading, as safetensors' do."""
        if self._file is None:
            raise ClosedFileError(f"{self._path}: File is closed (the safe_open handle was used after its `with` "
                                  "block); open the file again")

    def _record(self, name: str) -> TensorRecord:
        self._check_open()
        try:
            return self._records[name]
        except KeyError:
            raise KeyError(f"{self._path}: no tensor named {name!r}") from None

    def get_tensor(self, name: str) -> Any:
        """The tensor `name` (a numpy array with framework="np"), read into memory it owns."""
        plan = plan_load([self._record(name)])
        if self._numpy:
            from .engine.numpy_arrays import materialize_numpy

            return materialize_numpy(plan, files=[self._file])[name]
        return engine.materialize(plan, self._device, files=[self._file])[name]

    def get_tensors(self) -> dict[str, "torch.Tensor"]:
        """Every tensor of the file, in file order, read in one parallel engine call into memory they own."""
        self._check_open()
        return engine.materialize(plan_load(self._header.records), self._device, files=[self._file])

    def get_slice(self, name: str) -> "SafeSlice":
        """A handle whose `[...]` reads only the indexed part of tensor `name`."""
        return SafeSlice(self._record(name), self._file, self._device, self._numpy)


class SafeSlice:
    """One tensor of an open file; indexing copies just the selected elements (basic indexing)."""

    def __init__(self, record: TensorRecord, file: Any, device: DeviceLike, numpy: bool = False) -> None:
        self._record = record
        self._file = file
        self._device = device
        self._numpy = numpy

    def get_shape(self) -> list[int]:
        return list(self._record.shape)

    def get_dtype(self) -> str:
        return self._record.dtype

    def __getitem__(self, index: Any) -> Any:
        from .formats.slices import check_slice  # here: a load_file imports only the readers it uses

        check_slice(index, tuple(self._record.shape))
        if self._numpy:
            from .engine.numpy_arrays import numpy_views

            view = numpy_views(plan_load([self._record]), {self._record.path: self._file})
            return view[self._record.name][index].copy()  # owns its memory; only touched pages were read
        import torch

        view = engine.zero_copy_views(plan_load([self._record]), {self._record.path: self._file})
        selected = view[self._record.name][index]
        # A copy, so the result owns its memory: only the touched pages of the mapping are read.
        owned = selected.clone(memory_format=torch.contiguous_format)
        return owned if _is_cpu(self._device) else owned.to(self._device)


@without_gc_pauses
def load_checkpoint(path: PathLike, device: DeviceLike = "cpu", *, dtype: Any = None,
                    zero_copy: bool = False, from_tf: bool = False, skip_unsupported: bool = False) -> Any:
    """Loads a checkpoint (a file, a folder, or a `*.index.json` of shards) into one state dict (name -> tensor;
    a single torch.save file comes back whole, as load_torch gives it).

    Formats are recognised by content: safetensors, PyTorch .bin (zip, and the legacy pre-1.6 format,
    read through a weights-only unpickler that never runs code from the file). In a folder,
    safetensors is preferred to .bin, and an index to a single file. All files are planned together
    and read in one parallel engine call. Tensors come in the order the files list them (safetensors:
    by offset; .bin: the pickled state dict's order, as torch.load gives), shard after shard; tensors
    that share a .bin storage (tied weights, views) share it here too. `dtype` converts
    floating-point tensors. With `zero_copy=True` (CPU only, no `dtype`) tensors view the
    memory-mapped files instead of owning a copy; storages that are not aligned to their element
    size (legacy .bin) are copied.

    With `from_tf=True` the checkpoint is TensorFlow's (Keras h5 and its shards, TF-format safetensors,
    TF1 GPT-2 and TF2 object-based bundles) and comes back under PyTorch names, laid out as PyTorch
    wants (tf/checkpoint.py, engine/tf_tensors.py); TensorFlow is not needed, h5 files need h5py.
    TF-format safetensors and tensor bundles loaded without from_tf give their tensors as stored; Keras h5
    files need from_tf. Tensors no torch dtype can hold (TF strings and quantized types, h5 string datasets)
    raise UnsupportedDtypeError naming each of them; skip_unsupported=True leaves them out instead.

    A single torch.save file (zip or legacy) comes back as load_torch gives it: the pickled container
    (an OrderedDict for a state dict, with its `_metadata`), or whatever nested structure it holds.

    Raises CheckpointNotFoundError when nothing loadable is there, CheckpointError for corrupt or
    inconsistent files (UnsafeCheckpointError for a pickle that asks to run code).
    """
    if from_tf:
        from .engine.tf_tensors import load_tf_checkpoint

        if zero_copy:
            raise ZeroCopyError("zero_copy=True cannot be combined with from_tf=True: TF tensors are re-laid out "
                                "(transposed, reshaped) while they are read")
        return load_tf_checkpoint(os.fspath(path), device, dtype=_requested_dtype(dtype),
                                  skip_unsupported=skip_unsupported)
    # Imported here: the folder and index resolver (and the JSON reader under it) is not load_file's cost.
    from .formats.checkpoint import checkpoint_records

    torch_file = _torch_file_reader(os.fspath(path))
    if torch_file is not None:
        return _load_torch_file(torch_file(os.fspath(path)), device, dtype, zero_copy)
    records = checkpoint_records(os.fspath(path), skip_unsupported=skip_unsupported)
    plan = plan_load(records, _requested_dtype(dtype))
    if zero_copy:
        _check_zero_copy(plan, device)
        tensors = views_or_copies(plan)
    else:
        tensors = engine.materialize(plan, device)
    return {record.name: tensors[record.name] for record in records}


@without_gc_pauses
def load_torch(path: PathLike, device: DeviceLike = "cpu", *, dtype: Any = None, zero_copy: bool = False) -> Any:
    """Loads a torch.save file (zip, or the legacy pre-1.6 format) as `torch.load(path, weights_only=True)` does:
    the same object, with the same container types (OrderedDict, dict, list, tuple, torch.Size, dtypes and
    primitives), tensors of the same dtypes, shapes, strides and math bits (conjugate, negative), meta tensors,
    Parameters, and storages shared as the file shares them. Training checkpoints (model and optimizer state)
    load whole. The unpickler never runs code from the file: it accepts exactly torch's weights-only globals.

    Every storage is read by the engine in one parallel pass; big-endian archives are byte-swapped while
    copying. `device` places the tensors, `dtype` converts floating-point tensors, `zero_copy=True` (CPU only,
    no dtype) makes tensors view the memory-mapped file where their storage is aligned and little-endian.

    Raises CheckpointNotFoundError for a missing file, UnsupportedFormatError for a file that is not a
    torch.save file or holds what warpload does not rebuild (quantized, sparse, nested tensors),
    UnsafeCheckpointError for a pickle that asks to run code, CheckpointError for a corrupt file.
    """
    name = os.fspath(path)
    if not os.path.isfile(name):
        raise IsADirectoryError(f"{name} is a directory; load_torch reads one torch.save file (use "
                                "warpload.load_checkpoint for a checkpoint folder)") if os.path.isdir(name) \
            else CheckpointNotFoundError.no_such_file(name)
    reader = _torch_file_reader(name)
    if reader is None:
        from .formats.registry import detect_format

        raise UnsupportedFormatError(f"{name}: a {detect_format(name).name} file, not a torch.save file; load it "
                                     "with warpload.load_checkpoint", path=name)
    return _load_torch_file(reader(name), device, dtype, zero_copy)


def _torch_file_reader(path: str) -> Optional[Callable[[str], Any]]:
    """The structure reader of the torch.save file at path; None for folders, shard indexes and other formats."""
    if not os.path.isfile(path) or path.endswith(".json"):
        return None
    from .formats.registry import detect_format

    try:
        return detect_format(path).read_structure
    except UnsupportedFormatError:
        return None  # load_checkpoint's own resolution says what the file is


def _load_torch_file(contents: Any, device: DeviceLike, dtype: Any, zero_copy: bool) -> Any:
    from .engine.torch_file import load_torch_file  # a safetensors load never imports the torch-file rebuild

    if zero_copy and (not _is_cpu(device) or dtype is not None):
        raise ZeroCopyError("zero_copy=True views the file as it is: use device='cpu' and no dtype conversion")
    return load_torch_file(contents, device, dtype=_requested_dtype(dtype), zero_copy=zero_copy)
