"""The tensor API: load_file and safe_open (drop-ins for safetensors') and load_checkpoint."""
from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any, Optional, Union

from . import engine
from .constants import CHECKPOINT_NAMES
from .dtypes import dtype_name
from .errors import CheckpointError, CheckpointNotFoundError, HeaderError, UnsupportedFormatError
from .formats import detect_format
from .formats.registry import format_for_path
from .formats.safetensors import read_header
from .gc_pause import without_gc_pauses
from .mapped import aligned_in_file
from .plan import LoadPlan, TensorRecord, plan_load

if TYPE_CHECKING:
    import torch

PathLike = Union[str, "os.PathLike[str]"]
DeviceLike = Union[str, int, "torch.device"]


def _requested_dtype(dtype: Any) -> Optional[str]:
    return None if dtype is None else dtype_name(dtype)


def _is_cpu(device: DeviceLike) -> bool:
    return str(device) == "cpu"


@without_gc_pauses
def load_file(filename: PathLike, device: DeviceLike = "cpu", *, dtype: Any = None,
              zero_copy: bool = False) -> dict[str, "torch.Tensor"]:
    """Loads a safetensors file into a dict of tensors, like `safetensors.torch.load_file`.

    Tensors come in file order, as safetensors returns them, read in parallel into memory they
    own. With `zero_copy=True` (CPU only, no `dtype`) they instead view the memory-mapped file:
    nothing is read until a page is touched, and writes stay private to the process. `dtype`
    converts floating-point tensors (torch's rounding, bit for bit); integer and bool tensors
    keep their dtype.

    Raises CheckpointError (HeaderError) for a corrupt file, CheckpointNotFoundError if it is missing.
    """
    path = _existing_file(filename)
    header = read_header(path)
    plan = plan_load(header.records, _requested_dtype(dtype))
    if zero_copy:
        _check_zero_copy(plan, device)
        return engine.zero_copy_views(plan, {path: engine.core().File(path)})
    return engine.materialize(plan, device)


def _check_zero_copy(plan: LoadPlan, device: DeviceLike) -> None:
    if not _is_cpu(device) or any(s.converts for s in plan.storages):
        raise ValueError("zero_copy=True views the file as it is: use device='cpu' and no dtype conversion")


def _existing_file(filename: PathLike) -> str:
    path = os.fspath(filename)
    if not os.path.exists(path):
        raise CheckpointNotFoundError(f"{path}: no such file")
    if os.path.isdir(path):
        raise IsADirectoryError(f"{path} is a directory; load_file reads one safetensors file "
                                "(use warpload.load_checkpoint for a checkpoint folder)")
    return path


class safe_open:
    """Lazy access to a safetensors file, like `safetensors.safe_open`: reads only what is asked.

    Usable as a context manager; `keys()`, `offset_keys()`, `metadata()`, `get_tensor(name)` and
    `get_slice(name)[...]` behave as in safetensors.
    """

    def __init__(self, filename: PathLike, framework: str = "pt", device: DeviceLike = "cpu") -> None:
        if framework not in ("pt", "torch"):
            raise ValueError(f"framework={framework!r}: warpload returns torch tensors, use framework='pt'")
        self._path = _existing_file(filename)
        self._device = device
        self._header = read_header(self._path)
        self._records = {r.name: r for r in self._header.records}
        self._file = engine.core().File(self._path)

    def __enter__(self) -> "safe_open":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self._file = None

    def keys(self) -> list[str]:
        return sorted(self._records)

    def offset_keys(self) -> list[str]:
        """Tensor names in the order of their bytes in the file."""
        return [r.name for r in self._header.records]

    def metadata(self) -> Optional[dict[str, str]]:
        return None if self._header.metadata is None else dict(self._header.metadata)

    def _record(self, name: str) -> TensorRecord:
        if self._file is None:
            raise ValueError(f"{self._path}: the file was closed (used outside its `with` block)")
        try:
            return self._records[name]
        except KeyError:
            raise KeyError(f"{self._path}: no tensor named {name!r}") from None

    def get_tensor(self, name: str) -> "torch.Tensor":
        """The tensor `name`, read into memory it owns."""
        plan = plan_load([self._record(name)])
        return engine.materialize(plan, self._device, files=[self._file])[name]

    def get_slice(self, name: str) -> "SafeSlice":
        """A handle whose `[...]` reads only the indexed part of tensor `name`."""
        return SafeSlice(self._record(name), self._file, self._device)


class SafeSlice:
    """One tensor of an open file; indexing copies just the selected elements (basic indexing)."""

    def __init__(self, record: TensorRecord, file: Any, device: DeviceLike) -> None:
        self._record = record
        self._file = file
        self._device = device

    def get_shape(self) -> list[int]:
        return list(self._record.shape)

    def get_dtype(self) -> str:
        return self._record.dtype

    def __getitem__(self, index: Any) -> "torch.Tensor":
        import torch

        view = engine.zero_copy_views(plan_load([self._record]), {self._record.path: self._file})
        selected = view[self._record.name][index]
        # A copy, so the result owns its memory: only the touched pages of the mapping are read.
        owned = selected.clone(memory_format=torch.contiguous_format)
        return owned if _is_cpu(self._device) else owned.to(self._device)


@without_gc_pauses
def load_checkpoint(path: PathLike, device: DeviceLike = "cpu", *, dtype: Any = None,
                    zero_copy: bool = False, from_tf: bool = False) -> dict[str, "torch.Tensor"]:
    """Loads a checkpoint (a file, a folder, or a `*.index.json` of shards) into one state dict.

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
    wants (tf_checkpoint.py); TensorFlow is not needed, h5 files need h5py. TF-format safetensors and
    tensor bundles loaded without from_tf give their tensors as stored; Keras h5 files need from_tf.

    Raises CheckpointNotFoundError when nothing loadable is there, CheckpointError for corrupt or
    inconsistent files (UnsafeCheckpointError for a pickle that asks to run code).
    """
    if from_tf:
        from .tf_checkpoint import load_tf_checkpoint

        if zero_copy:
            raise ValueError("zero_copy=True cannot be combined with from_tf=True: TF tensors are re-laid out "
                             "(transposed, reshaped) while they are read")
        return load_tf_checkpoint(os.fspath(path), device, dtype=_requested_dtype(dtype))
    records = _checkpoint_records(os.fspath(path))
    plan = plan_load(records, _requested_dtype(dtype))
    if zero_copy:
        _check_zero_copy(plan, device)
        tensors = _mapped_tensors(plan)
    else:
        tensors = engine.materialize(plan, device)
    return {record.name: tensors[record.name] for record in records}


def _mapped_tensors(plan: LoadPlan) -> dict[str, "torch.Tensor"]:
    """Views of the mapped files for storages aligned to their element size; copies of the others."""
    files = {path: engine.core().File(path) for path in plan.paths}
    aligned, unaligned = [], []
    for planned in plan.tensors:
        (aligned if aligned_in_file(planned.record) else unaligned).append(planned.record)
    tensors = engine.zero_copy_views(plan_load(aligned), files)
    if unaligned:
        copies = plan_load(unaligned)
        tensors.update(engine.materialize(copies, files=[files[path] for path in copies.paths]))
    return tensors


def _checkpoint_records(path: str) -> list[TensorRecord]:
    if os.path.isdir(path):
        path = _weights_in_folder(path)
    elif not os.path.exists(path) and format_for_path(path) is None:
        raise CheckpointNotFoundError(f"{path}: no such file or directory")
    if path.endswith(".index.json"):
        return _sharded_records(path)
    try:
        fmt = detect_format(path)
    except UnsupportedFormatError:
        from .tf_checkpoint import is_tf_checkpoint

        if is_tf_checkpoint(path):
            raise UnsupportedFormatError(f"{path}: a TensorFlow checkpoint: pass from_tf=True to load it with "
                                         "PyTorch names", path=path) from None
        raise
    return list(fmt.read(path).records)


def _weights_in_folder(folder: str) -> str:
    """The checkpoint in a folder: a Hugging Face name (CHECKPOINT_NAMES, best first), else the only
    `*.index.json`, else the only `*.safetensors`."""
    for name in CHECKPOINT_NAMES:
        candidate = os.path.join(folder, name)
        if os.path.isfile(candidate):
            return candidate
    names = sorted(os.listdir(folder))
    for suffix in (".index.json", ".safetensors"):
        matches = [name for name in names if name.endswith(suffix)]
        if len(matches) == 1:
            return os.path.join(folder, matches[0])
    from .formats.tf_bundle import bundle_in_folder

    bundle = bundle_in_folder(folder)  # TensorFlow: the prefix named by `checkpoint`, or the only *.index
    if bundle is not None:
        return bundle
    from .tf_checkpoint import tf_weights_in_folder

    tf_weights = tf_weights_in_folder(folder)
    hint = (f"; it holds TensorFlow weights ({os.path.basename(tf_weights)}): pass from_tf=True" if tf_weights
            else "; pass the path of the weights file itself")
    raise CheckpointNotFoundError(
        f"{folder}: no {', '.join(CHECKPOINT_NAMES)} (found: {', '.join(names) or 'nothing'}){hint}"
    )


def read_weight_map(index_path: str) -> dict[str, str]:
    """The `weight_map` of a shard index: tensor name -> shard file name. Raises HeaderError when invalid."""
    try:
        with open(index_path, encoding="utf-8") as handle:
            weight_map = json.load(handle)["weight_map"]
        if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
            raise TypeError("weight_map must map tensor names to file names")
    except (ValueError, KeyError, TypeError) as err:
        raise HeaderError(f"{index_path}: not a valid shard index ({err!r})", path=index_path) from err
    return weight_map


def _sharded_records(index_path: str) -> list[TensorRecord]:
    """Records of every shard an index names, checked against its weight_map."""
    weight_map = read_weight_map(index_path)
    folder = os.path.dirname(index_path)
    records: list[TensorRecord] = []
    owner: dict[str, str] = {}
    for shard in sorted(set(weight_map.values())):
        shard_path = os.path.join(folder, shard)
        if os.path.basename(shard) != shard:
            raise HeaderError(f"{index_path}: shard name {shard!r} must be a plain file name", path=index_path)
        if not os.path.isfile(shard_path):
            raise CheckpointNotFoundError(f"{index_path} names shard {shard!r}, which is missing from {folder}")
        for record in detect_format(shard_path).read(shard_path).records:
            if record.name in owner:
                raise CheckpointError(
                    f"tensor {record.name!r} is in both {owner[record.name]} and {shard_path}",
                    path=shard_path, tensor=record.name, offset=record.offset,
                )
            owner[record.name] = shard_path
            records.append(record)
    for name, shard in weight_map.items():
        if owner.get(name) != os.path.join(folder, shard):
            raise CheckpointError(
                f"{index_path} maps tensor {name!r} to {shard}, but that shard does not hold it",
                path=os.path.join(folder, shard), tensor=name,
            )
    return records
