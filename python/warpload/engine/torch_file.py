"""torch.save files as torch.load(weights_only=True) returns them: every storage read in one engine plan, then the
unpickled structure rebuilt around them (containers of the pickled types, torch.Size, dtypes, devices, storages
shared as the file shares them)."""
from __future__ import annotations

from collections import Counter, OrderedDict
from typing import TYPE_CHECKING, Any, Optional

from ..dtypes import COMPLEX_COMPONENTS, TORCH_EXTRA_DTYPES, dtype_info
from ..errors import CheckpointError, UnsupportedFormatError
from ..formats.torch_objects import (
    MetaTensorStub,
    ParameterStub,
    PickledCounter,
    PickledOrderedDict,
    StorageRef,
    TensorStub,
    TorchDevice,
    TorchDtype,
    TorchFile,
    TorchSize,
)
from ..plan import TensorRecord, plan_load, target_dtype
from . import devices
from .mapped import views_or_copies

if TYPE_CHECKING:
    import torch

# Values the unpickler builds as torch.load's does: returned as they are.
_PLAIN = (str, bytes, bytearray, int, float, bool, complex, type(None))


def load_torch_file(contents: TorchFile, device: Any = "cpu", *, dtype: Optional[str] = None,
                    zero_copy: bool = False) -> Any:
    """The object a torch.save file holds, with every tensor and storage loaded by one engine pass over the
    file's storages (a second one for the storages `dtype` must leave alone: complex32 and complex128, read as
    their float components, and storages that tensors view as several dtypes).

    `dtype` converts floating-point storages whose tensors all share the storage's dtype. With `zero_copy`
    tensors view the mapped file where their storage is aligned and little-endian. Raises CheckpointError
    for a tensor that does not fit its storage, UnsupportedFormatError for objects torch.load would build but
    that are not data (a bare class or function).
    """
    views = _storage_views(contents)
    converted, kept = [], []
    delivered: dict[int, str] = {}
    refs = _file_storages(contents, views)
    for index, ref in enumerate(refs.values()):
        stored = ref.dtype or "U8"
        # plan_load converts floats only; these storages must not be converted at all.
        convert = stored not in TORCH_EXTRA_DTYPES and views.get(id(ref), set()) <= {stored}
        delivered[id(ref)] = target_dtype(stored, dtype) if convert else stored
        component = COMPLEX_COMPONENTS[stored] if stored in TORCH_EXTRA_DTYPES else stored
        count = ref.nbytes * 8 // dtype_info(component).bits
        (converted if convert else kept).append(
            TensorRecord(f"storage {index} ({ref.key})", component, (count,), contents.path, ref.offset, ref.nbytes,
                         byteswap=ref.byteswap))
    loaded: dict[str, "torch.Tensor"] = {}
    for records, requested in ((converted, dtype), (kept, None)):
        if records:
            loaded.update(_load(plan_load(records, requested), device, zero_copy))
    storages = {key: loaded[f"storage {index} ({ref.key})"] for index, (key, ref) in enumerate(refs.items())}
    return _Rebuild(storages, delivered, contents.path).value(contents.state, "")


def _load(plan: Any, device: Any, zero_copy: bool) -> dict[str, "torch.Tensor"]:
    if zero_copy:
        return views_or_copies(plan)
    return devices.materialize(plan, device)


def _storage_views(contents: TorchFile) -> dict[int, set[str]]:
    """The dtypes each storage (by id) is viewed as, every tensor checked to fit in its storage."""
    views: dict[int, set[str]] = {}
    seen: set[int] = set()

    def visit(value: Any, where: str) -> None:
        kind = type(value)
        if kind in _PLAIN or id(value) in seen:
            return
        seen.add(id(value))
        if kind in (TensorStub, ParameterStub):
            if kind is TensorStub:
                views.setdefault(id(value.storage), set()).add(value.checked_dtype(where, contents.path))
            else:
                visit(value.data, where)
            for name, item in value.attributes.items():
                visit(item, f"{where}.{name}")
        elif isinstance(value, dict):
            for key, item in value.items():
                visit(key, where)
                visit(item, child_name(where, key))
            for key, item in getattr(value, "attributes", {}).items():
                visit(item, f"{where}.{key}")
        elif kind in (list, tuple, set):
            for index, item in enumerate(value):
                visit(item, f"{where}[{index}]")

    _guard_depth(visit, contents.state, "", contents.path)
    return views


def _file_storages(contents: TorchFile, views: dict[int, set[str]]) -> dict[int, StorageRef]:
    """The storages to read, by id: every one the file has bytes for. Raises CheckpointError when a tensor views
    one it has no bytes for."""
    used = {id(ref): ref for ref in contents.storages if ref.offset is not None}
    missing = [ref.key for ref in contents.storages if ref.offset is None and id(ref) in views]
    if missing:
        raise CheckpointError(f"{contents.path}: storage {missing[0]!r} has no bytes in the file; it is corrupt",
                              path=contents.path)
    return used


def child_name(where: str, key: Any) -> str:
    """How errors name an item of a dict at `where`: "model.wte.weight", "optimizer.state[0]"."""
    if type(key) is str:
        return f"{where}.{key}" if where else key
    return f"{where}[{key!r}]"


def _guard_depth(walk: Any, state: Any, where: str, path: str) -> Any:
    try:
        return walk(state, where)
    except RecursionError as err:
        raise CheckpointError(f"{path}: the pickled object nests deeper than Python's recursion limit; the file is "
                              "corrupt or hostile", path=path) from err


class _Rebuild:
    """The torch objects for the unpickler's stand-ins, each built once (shared and recursive objects stay so)."""

    def __init__(self, storages: dict[int, "torch.Tensor"], delivered: dict[int, str], path: str) -> None:
        import torch

        self.torch = torch
        self.storages = storages  # id of a StorageRef -> the 1-D tensor of its bytes
        self.delivered = delivered  # id of a StorageRef -> the dtype its bytes were delivered in
        self.path = path
        self.built: dict[int, Any] = {}

    def value(self, state: Any, where: str) -> Any:
        try:
            return _guard_depth(self.build, state, where, self.path)
        except (RuntimeError, TypeError) as err:  # torch refusing what a corrupt pickle asks it to build
            raise CheckpointError(f"{self.path}: torch cannot build the pickled object ({type(err).__name__}: "
                                  f"{str(err)[:200]}); the file is corrupt", path=self.path) from err

    def build(self, value: Any, where: str) -> Any:
        kind = type(value)
        if kind in _PLAIN:
            return value
        done = self.built.get(id(value))
        if done is not None:
            return done
        if isinstance(value, dict):
            return self.mapping(value, where)
        if kind is list:
            items: list = []
            self.built[id(value)] = items
            items.extend(self.build(item, f"{where}[{index}]") for index, item in enumerate(value))
            return items
        result = self.leaf(value, where)
        self.built[id(value)] = result
        return result

    def mapping(self, value: dict, where: str) -> Any:
        kind = OrderedDict if type(value) is PickledOrderedDict else Counter if type(value) is PickledCounter else dict
        result = self.built[id(value)] = kind()
        for key, item in value.items():
            result[self.build(key, where)] = self.build(item, child_name(where, key))
        for name, item in getattr(value, "attributes", {}).items():
            result.__dict__[name] = self.build(item, f"{where}.{name}")  # as torch's BUILD does
        return result

    def leaf(self, value: Any, where: str) -> Any:
        torch, kind = self.torch, type(value)
        if kind is tuple:
            return tuple(self.build(item, f"{where}[{index}]") for index, item in enumerate(value))
        if kind is set:
            return {self.build(item, where) for item in value}
        if kind is TorchSize:
            return torch.Size(value)
        if kind is TorchDtype:
            return self.dtype(value.name)
        if kind is TorchDevice:
            return torch.device(value.name)
        if kind is TensorStub:
            return self.with_attributes(self.tensor(value, where), value.attributes, where)
        if kind is ParameterStub:
            parameter = torch.nn.Parameter(self.build(value.data, where), value.requires_grad)
            return self.with_attributes(parameter, value.attributes, where)
        if kind is MetaTensorStub:
            return torch.empty_strided(value.shape, value.stride, dtype=self.dtype(value.dtype.name), device="meta",
                                       requires_grad=value.requires_grad)
        if kind is StorageRef:
            return self.storage(value)
        raise UnsupportedFormatError(f"{self.path}: {where or 'the file'} is a {kind.__name__} (a class or function "
                                     "torch allows in a weights-only pickle, not data); load it with "
                                     "torch.load(weights_only=True)", path=self.path)

    def with_attributes(self, tensor: "torch.Tensor", attributes: dict, where: str) -> "torch.Tensor":
        """The tensor with its pickled Python attributes set, as torch's _set_obj_state does; one that would
        replace something torch.Tensor has (`data`, `grad`, a method) is refused rather than run."""
        for name, item in attributes.items():
            if hasattr(self.torch.nn.Parameter, name):
                raise UnsupportedFormatError(f"{self.path}: {where or 'the tensor'} sets attribute {name!r}, which "
                                             "torch tensors already have; warpload sets only new attributes: load "
                                             "this file with torch.load(weights_only=True)", path=self.path)
            setattr(tensor, name, self.build(item, f"{where}.{name}"))
        return tensor

    def dtype(self, name: str) -> "torch.dtype":
        return getattr(self.torch, dtype_info(name).torch_name)

    def tensor(self, stub: TensorStub, where: str) -> "torch.Tensor":
        # As torch's _rebuild_tensor_v3: an empty tensor set_ to the storage, so it views it and is no one's view.
        storage = stub.storage
        stored = storage.dtype or "U8"
        wanted = stored if stub.dtype is None else stub.dtype.name
        dtype = self.delivered[id(storage)] if wanted == stored else wanted
        base = self.storages[id(storage)]
        tensor = self.torch.empty((0,), dtype=self.dtype(dtype), device=base.device)
        tensor.set_(base.untyped_storage(), stub.storage_offset, stub.shape, stub.stride)
        if stub.requires_grad:
            tensor.requires_grad_(True)
        if stub.metadata:
            self.torch._utils.set_tensor_metadata(tensor, stub.metadata)
        return tensor

    def storage(self, ref: StorageRef) -> Any:
        """A storage pickled on its own: a TypedStorage of its dtype (uint8 when untyped), as torch.load gives."""
        untyped = self.storages[id(ref)].untyped_storage()
        return self.torch.storage.TypedStorage(wrap_storage=untyped, dtype=self.dtype(self.delivered[id(ref)]),
                                               _internal=True)
