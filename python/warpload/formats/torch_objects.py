"""What a weights-only torch pickle may build: stand-ins for the globals torch.load(weights_only=True) allows.

Nothing real is built: an allowed global resolves to warpload's own stand-in (a tensor rebuild
function returns a TensorStub, a storage class a StorageType), so torch is never imported and no
callable outside this module can run. TensorStubs then become plan records, checked against their
storages. The allow-list is torch 2.13's (torch/_weights_only_unpickler.py _get_allowed_globals).
"""
from __future__ import annotations

from collections import Counter, OrderedDict
from math import prod
from typing import Any, Optional

from ..dtypes import DTYPES
from ..errors import CheckpointError, UnsafeCheckpointError, UnsupportedDtypeError, UnsupportedFormatError
from ..plan import TensorRecord


class TorchDtype:
    """A torch dtype a pickle names (GLOBAL 'torch bfloat16'), by its safetensors name."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name


class StorageType:
    """A torch storage class (GLOBAL 'torch FloatStorage'); dtype None is torch.storage.UntypedStorage (bytes)."""

    __slots__ = ("dtype",)

    def __init__(self, dtype: Optional[str]) -> None:
        self.dtype = dtype


class TorchType:
    """torch.Tensor or torch.nn.Parameter named as a type (the second argument of _rebuild_from_type_v2)."""

    __slots__ = ()


class StorageRef:
    """A storage a persistent id names: `numel` elements of `dtype` (bytes when untyped) at file `offset`.

    Container readers create one per storage key; `offset` is None until the reader knows it.
    """

    __slots__ = ("key", "dtype", "numel", "offset", "itemsize", "nbytes")

    def __init__(self, key: str, dtype: Optional[str], numel: int, offset: Optional[int] = None) -> None:
        self.key = key
        self.dtype = dtype
        self.numel = numel
        self.offset = offset
        self.itemsize = 1 if dtype is None else DTYPES[dtype].bits // 8
        self.nbytes = numel * self.itemsize


class TensorStub:
    """What a torch._utils rebuild function would make a tensor of; checked when it becomes a record."""

    __slots__ = ("storage", "storage_offset", "shape", "stride", "dtype")

    def __init__(self, storage: Any, storage_offset: Any, shape: Any, stride: Any, dtype: Any) -> None:
        self.storage = storage
        self.storage_offset = storage_offset
        self.shape = shape
        self.stride = stride
        self.dtype = dtype  # None: the storage's dtype (the v1/v2 rebuilds)

    def record(self, name: str, path: str) -> TensorRecord:
        """The plan record of this tensor: its whole storage's byte range, plus its view of it in elements.

        Raises CheckpointError when the view does not fit in its storage or a field has the wrong type.
        """
        def fail(problem: str) -> CheckpointError:
            return CheckpointError(f"{path}: tensor {name!r} {problem}; the file is corrupt", path=path, tensor=name)

        storage, shape, stride, offset = self.storage, self.shape, self.stride, self.storage_offset
        if type(storage) is not StorageRef:
            raise fail(f"has a storage of type {type(storage).__name__}, not a storage persistent id")
        if storage.offset is None:
            raise fail(f"uses storage {storage.key!r}, whose bytes the file does not hold")
        if self.dtype is None:
            dtype = storage.dtype or "U8"
        elif type(self.dtype) is TorchDtype:
            dtype = self.dtype.name
        else:
            raise fail(f"has a dtype of type {type(self.dtype).__name__}, not a torch dtype")
        if not (_is_index_tuple(shape) and _is_index_tuple(stride) and len(shape) == len(stride)):
            raise fail("needs a shape and a stride that are tuples of non-negative integers of one length")
        if type(offset) is not int or offset < 0:
            raise fail(f"has a storage offset of type {type(offset).__name__}, not a non-negative integer")
        bits = DTYPES[dtype].bits
        nbytes = storage.nbytes
        capacity, leftover = divmod(nbytes * 8, bits)
        if leftover:
            raise fail(f"is {dtype}, but its storage {storage.key!r} of {nbytes} bytes is not a whole number of "
                       "such elements")
        numel = prod(shape)
        contiguous = _is_contiguous(shape, stride)
        if not numel:
            end = offset
        elif contiguous:  # the sum below telescopes to numel - 1
            end = offset + numel
        else:
            end = offset + 1 + sum((dim - 1) * step for dim, step in zip(shape, stride))
        if end > capacity:
            raise fail(f"(shape {list(shape)}, stride {list(stride)}, storage offset {offset}) reaches element "
                       f"{end} of storage {storage.key!r}, which holds {capacity} {dtype} elements")
        whole = offset == 0 and numel == capacity and contiguous
        return TensorRecord(name, dtype, shape, path, storage.offset, nbytes, None if whole else stride, offset)


def _is_index_tuple(value: Any) -> bool:
    # A plain loop: for the 1-4 items of a shape it takes 0.06-0.1 us, all() over a generator 0.15-0.25 us.
    if type(value) is not tuple:
        return False
    for item in value:
        if type(item) is not int or item < 0:
            return False
    return True


def _is_contiguous(shape: tuple[int, ...], stride: tuple[int, ...]) -> bool:
    """True for exactly the strides torch gives a new tensor of this shape (so a view reproduces them)."""
    expected = 1
    for dim, step in zip(reversed(shape), reversed(stride)):
        if step != expected:
            return False
        expected *= max(dim, 1)
    return True


# Stand-ins for the allowed callables, with torch's signatures (torch/_utils.py, torch/_tensor.py).
def _refuse_metadata(metadata: Any) -> None:
    if metadata:
        raise UnsupportedFormatError(f"a tensor carries {type(metadata).__name__} metadata (conjugate or negative "
                                     "bit views); load this file with torch.load(weights_only=True)")


def _rebuild_tensor(storage: Any, storage_offset: Any, size: Any, stride: Any) -> TensorStub:
    return TensorStub(storage, storage_offset, size, stride, None)


def _rebuild_tensor_v2(storage: Any, storage_offset: Any, size: Any, stride: Any, requires_grad: Any,
                       backward_hooks: Any, metadata: Any = None) -> TensorStub:
    _refuse_metadata(metadata)
    return TensorStub(storage, storage_offset, size, stride, None)


def _rebuild_tensor_v3(storage: Any, storage_offset: Any, size: Any, stride: Any, requires_grad: Any,
                       backward_hooks: Any, dtype: Any, metadata: Any = None) -> TensorStub:
    _refuse_metadata(metadata)
    return TensorStub(storage, storage_offset, size, stride, dtype)


def _rebuild_parameter(data: Any, requires_grad: Any, backward_hooks: Any) -> Any:
    return data


def _rebuild_parameter_with_state(data: Any, requires_grad: Any, backward_hooks: Any, state: Any) -> Any:
    return data


_TENSOR = TorchType()
_PARAMETER = TorchType()
_REBUILD_FUNCTIONS = (_rebuild_tensor, _rebuild_tensor_v2, _rebuild_tensor_v3, _rebuild_parameter,
                      _rebuild_parameter_with_state)


def _rebuild_from_type_v2(func: Any, new_type: Any, args: Any, state: Any) -> Any:
    # A tensor with Python attributes (`state`), or a Parameter: the attributes are not tensor data.
    if not any(func is f for f in _REBUILD_FUNCTIONS) or not (new_type is _TENSOR or new_type is _PARAMETER) \
            or type(args) is not tuple:
        raise CheckpointError("_rebuild_from_type_v2 must wrap a tensor rebuild function, a tensor type "
                              "and an argument tuple")
    return func(*args)


def _encode(text: Any, encoding: Any) -> bytes:
    # Protocol 2 pickles bytes as _codecs.encode(latin-1 text, 'latin1'); other codecs could import modules.
    if type(text) is not str or encoding not in ("latin1", "latin-1"):
        raise CheckpointError("_codecs.encode is allowed only as (str, 'latin1'), the way pickle writes bytes")
    return text.encode("latin1")


def _bytearray(*args: Any) -> bytearray:
    # bytearray(n) would allocate n bytes: only the forms pickle writes are allowed.
    if not args:
        return bytearray()
    if len(args) == 1 and type(args[0]) is bytes:
        return bytearray(args[0])
    if len(args) == 2 and type(args[0]) is str and args[1] in ("latin1", "latin-1"):
        return bytearray(args[0], "latin1")
    raise CheckpointError("builtins.bytearray is allowed only with bytes, or latin-1 text, as pickle writes it")


def _size(dims: Any = ()) -> tuple[int, ...]:
    if not _is_index_tuple(tuple(dims) if type(dims) in (tuple, list) else None):
        raise CheckpointError("torch.Size takes a tuple of non-negative integers")
    return tuple(dims)


def _device(kind: Any, index: Any = None) -> str:
    if type(kind) is not str or not (index is None or type(index) is int):
        raise CheckpointError("torch.device takes a device string and an optional integer index")
    return kind if index is None else f"{kind}:{index}"


class _PickledOrderedDict(OrderedDict):
    """collections.OrderedDict as a pickle may build it. BUILD may only give it a dict of attributes (a state
    dict's `_metadata`, module versions that loading tensors does not need), which is checked and dropped."""

    def __setstate__(self, state: Any) -> None:
        if type(state) is not dict or not all(type(key) is str for key in state):
            raise CheckpointError("BUILD on a dict takes a dict of attribute names")


class _PickledCounter(Counter):
    __setstate__ = _PickledOrderedDict.__setstate__


# torch's storage classes (torch/storage.py _dtype_to_storage_type_map) with a safetensors dtype.
_STORAGE_DTYPES = {
    "Double": "F64", "Float": "F32", "Half": "F16", "BFloat16": "BF16", "Long": "I64", "Int": "I32",
    "Short": "I16", "Char": "I8", "Byte": "U8", "Bool": "BOOL", "ComplexFloat": "C64",
}

# Globals resolve here by "module.name", as torch matches them. F4 (float4_e2m1fn_x2) is left out:
# safetensors counts its values, torch its bytes, so its strided views need a rule of their own.
SAFE_GLOBALS: dict[str, Any] = {
    "collections.OrderedDict": _PickledOrderedDict,
    "collections.Counter": _PickledCounter,
    "builtins.set": set,
    "builtins.complex": complex,
    "builtins.bytearray": _bytearray,
    "_codecs.encode": _encode,
    "torch.Size": _size,
    "torch.device": _device,
    "torch.Tensor": _TENSOR,
    "torch.nn.parameter.Parameter": _PARAMETER,
    "torch._utils._rebuild_tensor": _rebuild_tensor,
    "torch._utils._rebuild_tensor_v2": _rebuild_tensor_v2,
    "torch._utils._rebuild_tensor_v3": _rebuild_tensor_v3,
    "torch._utils._rebuild_parameter": _rebuild_parameter,
    "torch._utils._rebuild_parameter_with_state": _rebuild_parameter_with_state,
    "torch._tensor._rebuild_from_type_v2": _rebuild_from_type_v2,
    "torch.storage.UntypedStorage": StorageType(None),
}
SAFE_GLOBALS.update({f"{module}.{kind}Storage": StorageType(dtype)
                     for module in ("torch", "torch.cuda") for kind, dtype in _STORAGE_DTYPES.items()})
SAFE_GLOBALS.update({f"torch.{info.torch_name}": TorchDtype(info.name)
                     for info in DTYPES.values() if info.torch_name is not None and info.name != "F4"})

# The rest of torch 2.13's weights-only allow-list: safe to read, but not dense tensors warpload returns.
_TENSOR_KINDS = ("BFloat16", "Byte", "Char", "Double", "Float", "Half", "Int", "Long", "Short")
TORCH_ONLY_GLOBALS = frozenset(
    [f"torch._utils._rebuild_{kind}" for kind in (
        "qtensor", "sparse_tensor", "meta_tensor_no_storage", "nested_tensor", "wrapper_subclass",
        "device_tensor_from_numpy", "device_tensor_from_cpu_tensor")]
    + ["torch.serialization._get_layout", "torch.storage.TypedStorage"]
    + [f"torch.{scheme}" for scheme in ("per_tensor_affine", "per_tensor_symmetric", "per_channel_affine",
                                        "per_channel_symmetric", "per_channel_affine_float_qparams")]
    + [f"{module}.{kind}Tensor" for module in ("torch", "torch.cuda") for kind in _TENSOR_KINDS + ("Bool",)]
    + [f"{module}.{kind}Tensor" for module in ("torch.sparse", "torch.cuda.sparse") for kind in _TENSOR_KINDS]
)
TORCH_ONLY_DTYPES = frozenset(
    [f"torch.{name}" for name in ("complex32", "qint8", "qint32", "quint8", "quint4x2", "quint2x4",
                                  "float4_e2m1fn_x2", "bits16", "bits1x8", "bits2x4", "bits4x2", "bits8")]
    + [f"torch.{kind}{bits}" for kind in ("uint", "int") for bits in range(1, 8)]
    + [f"torch.{kind}Storage" for kind in ("ComplexDouble", "QInt8", "QInt32", "QUInt8", "QUInt4x2", "QUInt2x4")]
    + ["torch.cuda.ComplexDoubleStorage"]
)

# Python 2 pickles name builtins `__builtin__` (pickle's own fix_imports mapping, reduced to the
# one module whose globals are allowed).
_PY2_MODULES = {"__builtin__": "builtins"}


def resolve_global(module: str, name: str, *, source: str, path: str, offset: Optional[int] = None) -> Any:
    """The stand-in for global module.name, or an error: UnsafeCheckpointError outside torch's weights-only
    allow-list, UnsupportedFormatError / UnsupportedDtypeError inside it but beyond what warpload returns."""
    full_name = f"{_PY2_MODULES.get(module, module)}.{name}"
    found = SAFE_GLOBALS.get(full_name)
    if found is not None:
        return found
    where = source if offset is None else f"{source}, byte {offset}"
    if full_name in TORCH_ONLY_DTYPES:
        raise UnsupportedDtypeError(f"{where}: {full_name} has no safetensors dtype, so warpload cannot return "
                                    "it; load the file with torch.load(weights_only=True)")
    if full_name in TORCH_ONLY_GLOBALS:
        raise UnsupportedFormatError(f"{where}: uses {full_name} (a quantized, sparse, nested, meta or subclassed "
                                     "tensor); warpload returns dense tensors: load the file with "
                                     "torch.load(weights_only=True)", path=path, offset=offset)
    raise UnsafeCheckpointError(
        f"{where}: global {full_name!r} is not allowed: a weights-only load builds tensors and plain containers "
        "only, and this one could run code. Nothing was run. Load the file only if you trust where it came "
        "from, with torch.load(weights_only=False)", path=path, offset=offset)


def storage_id(pid: Any, fields: int, *, source: str, path: str) -> tuple[StorageType, str, int, tuple]:
    """Checks a storage persistent id ('storage', storage type, key, location, numel, ...) of `fields` items;
    returns the storage type, key, numel and the items after numel."""
    if type(pid) is not tuple or not pid or pid[0] != "storage":
        kind = pid[0] if type(pid) is tuple and pid and type(pid[0]) is str else type(pid).__name__
        raise UnsafeCheckpointError(f"{source}: persistent id of kind {kind!r}: only storages may be loaded "
                                    "by a weights-only load (torch.load(weights_only=True) refuses it too)",
                                    path=path)
    if len(pid) != fields:
        raise CheckpointError(f"{source}: storage persistent id has {len(pid)} fields, expected {fields}", path=path)
    storage_type, key, location, numel = pid[1:5]
    if type(storage_type) is not StorageType or type(key) is not str or type(location) is not str \
            or type(numel) is not int or numel < 0:
        raise CheckpointError(f"{source}: a storage persistent id needs a storage class, a string key, a "
                              "location string and a non-negative element count", path=path)
    return storage_type, key, numel, pid[5:]


def state_dict_records(state: Any, path: str) -> list[TensorRecord]:
    """Plan records for an unpickled state dict (name -> tensor), in the dict's order.

    Raises UnsupportedFormatError when the pickle holds anything else (a training checkpoint, a bare
    tensor), CheckpointError when a tensor does not fit in its storage.
    """
    if not isinstance(state, dict):
        raise UnsupportedFormatError(
            f"{path}: holds a pickled {type(state).__name__}, not a state dict; load_checkpoint reads dicts of "
            "tensors (torch.load(weights_only=True) reads the rest)", path=path)
    records = []
    for name, value in state.items():
        if type(name) is not str or type(value) is not TensorStub:
            label = repr(name[:100]) if type(name) is str else f"of type {type(name).__name__}"
            raise UnsupportedFormatError(
                f"{path}: entry {label} is a {type(value).__name__}, not a tensor; load_checkpoint reads "
                "state dicts (name -> tensor): for a training checkpoint, use torch.load(weights_only=True)",
                path=path)
        records.append(value.record(name, path))
    return records
