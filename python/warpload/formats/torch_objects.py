"""What a weights-only torch pickle may build: stand-ins for the globals torch.load(weights_only=True) allows.

Nothing real is built: an allowed global resolves to warpload's own stand-in (a tensor rebuild
function returns a TensorStub, a storage class a StorageType, torch.Size a TorchSize), so torch is
never imported and no callable outside this module can run. TensorStubs then become plan records,
checked against their storages: those of a state dict (state_dict_records), or every storage of the
file, which engine/torch_file.py turns back into what torch.load(weights_only=True) returns. The
allow-list is torch 2.13's (torch/_weights_only_unpickler.py _get_allowed_globals).
"""
from __future__ import annotations

from collections import Counter, OrderedDict
from dataclasses import dataclass
from math import prod
from typing import Any, Optional

from ..dtypes import DTYPES, TORCH_EXTRA_DTYPES, dtype_info
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


class TorchSize(tuple):
    """torch.Size as a pickle builds it (a tuple of non-negative ints); load_torch returns a torch.Size."""

    __slots__ = ()


class TorchDevice:
    """torch.device as a pickle builds it, by its text ("cpu", "cuda:1")."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name


class TorchType:
    """torch.Tensor or torch.nn.Parameter named as a type (the second argument of _rebuild_from_type_v2)."""

    __slots__ = ()


class StorageRef:
    """A storage a persistent id names: `numel` elements of `dtype` (bytes when untyped) at file `offset`.

    Container readers create one per storage key; `offset` is None until the reader knows it.
    """

    __slots__ = ("key", "dtype", "numel", "offset", "itemsize", "nbytes", "byteswap")

    def __init__(self, key: str, dtype: Optional[str], numel: int, offset: Optional[int] = None) -> None:
        self.key = key
        self.dtype = dtype
        self.numel = numel
        self.offset = offset
        self.itemsize = 1 if dtype is None else dtype_info(dtype).bits // 8
        self.nbytes = numel * self.itemsize
        self.byteswap = 0  # set by a big-endian archive's reader (dtypes.byteswap_unit)


class TensorStub:
    """What a torch._utils rebuild function would make a tensor of; checked when it becomes a record."""

    __slots__ = ("storage", "storage_offset", "shape", "stride", "dtype", "requires_grad", "metadata", "attributes")

    def __init__(self, storage: Any, storage_offset: Any, shape: Any, stride: Any, dtype: Any,
                 requires_grad: Any = False, metadata: Any = None) -> None:
        self.storage = storage
        self.storage_offset = storage_offset
        self.shape = shape
        self.stride = stride
        self.dtype = dtype  # None: the storage's dtype (the v1/v2 rebuilds)
        self.requires_grad = requires_grad
        self.metadata = metadata  # {"conj": True} / {"neg": True}: torch's math bits, set on the loaded tensor
        self.attributes: dict = {}  # Python attributes (_rebuild_from_type_v2's state)

    def record(self, name: str, path: str) -> TensorRecord:
        """The plan record of this tensor: its whole storage's byte range, plus its view of it in elements.

        Raises CheckpointError when the view does not fit in its storage or a field has the wrong type,
        UnsupportedFormatError / UnsupportedDtypeError for what a state dict of safetensors dtypes cannot hold
        (math bits, complex32 and complex128: load_torch returns those).
        """
        dtype = self.checked_dtype(name, path)
        if self.metadata:
            raise UnsupportedFormatError(f"{path}: tensor {name!r} carries the conjugate or negative bit "
                                         f"({self.metadata}); warpload.load_torch returns it as torch.load does",
                                         path=path, tensor=name)
        if dtype not in DTYPES:
            raise UnsupportedDtypeError(f"{path}: tensor {name!r} is torch.{dtype_info(dtype).torch_name}, which "
                                        "has no safetensors dtype; warpload.load_torch returns it as torch.load does")
        storage, shape, stride, offset = self.storage, self.shape, self.stride, self.storage_offset
        whole = offset == 0 and prod(shape) * DTYPES[dtype].bits == storage.nbytes * 8 and _is_contiguous(shape, stride)
        return TensorRecord(name, dtype, shape, path, storage.offset, storage.nbytes, None if whole else stride, offset,
                            byteswap=storage.byteswap)

    def checked_dtype(self, name: str, path: str) -> str:
        """The tensor's dtype, once its storage, shape, stride and offset are checked to be a view that fits in
        its storage. Raises CheckpointError naming the tensor (`name`, a path in the unpickled structure)."""
        def fail(problem: str) -> CheckpointError:
            return CheckpointError(f"{path}: tensor {name!r} {problem}; the file is corrupt", path=path, tensor=name)

        if type(self.requires_grad) is not bool or not (self.metadata is None or _is_math_bits(self.metadata)):
            raise fail("has a requires_grad that is not a bool, or metadata other than torch's conj/neg bits")

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
        bits = dtype_info(dtype).bits
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
        return dtype


def _is_math_bits(metadata: Any) -> bool:
    return type(metadata) is dict and all(key in ("conj", "neg") and type(bit) is bool
                                          for key, bit in metadata.items())


class MetaTensorStub:
    """A meta tensor (torch._utils._rebuild_meta_tensor_no_storage): a dtype, shape and stride, and no bytes."""

    __slots__ = ("dtype", "shape", "stride", "requires_grad")

    def __init__(self, dtype: Any, shape: Any, stride: Any, requires_grad: Any) -> None:
        if type(dtype) is not TorchDtype or not (_is_index_tuple(tuple(shape) if type(shape) in (tuple, list, TorchSize)
                                                                 else None) and _is_index_tuple(stride)) \
                or len(shape) != len(stride) or type(requires_grad) is not bool:
            raise CheckpointError("_rebuild_meta_tensor_no_storage takes a torch dtype, a shape and a stride of one "
                                  "length, and a bool")
        self.dtype = dtype
        self.shape = tuple(shape)
        self.stride = stride
        self.requires_grad = requires_grad


class ParameterStub:
    """torch.nn.Parameter around a tensor stub (torch._utils._rebuild_parameter)."""

    __slots__ = ("data", "requires_grad", "attributes")

    def __init__(self, data: Any, requires_grad: Any, attributes: Optional[dict] = None) -> None:
        if type(data) not in (TensorStub, MetaTensorStub) or type(requires_grad) is not bool:
            raise CheckpointError("_rebuild_parameter takes a tensor and a bool")
        self.data = data
        self.requires_grad = requires_grad
        self.attributes = attributes or {}  # Python attributes of the Parameter (_rebuild_parameter_with_state)


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
def _rebuild_tensor(storage: Any, storage_offset: Any, size: Any, stride: Any) -> TensorStub:
    return TensorStub(storage, storage_offset, size, stride, None)


def _rebuild_tensor_v2(storage: Any, storage_offset: Any, size: Any, stride: Any, requires_grad: Any,
                       backward_hooks: Any, metadata: Any = None) -> TensorStub:
    return TensorStub(storage, storage_offset, size, stride, None, requires_grad, metadata or None)


def _rebuild_tensor_v3(storage: Any, storage_offset: Any, size: Any, stride: Any, requires_grad: Any,
                       backward_hooks: Any, dtype: Any, metadata: Any = None) -> TensorStub:
    return TensorStub(storage, storage_offset, size, stride, dtype, requires_grad, metadata or None)


def _rebuild_meta_tensor_no_storage(dtype: Any, size: Any, stride: Any, requires_grad: Any) -> MetaTensorStub:
    return MetaTensorStub(dtype, size, stride, requires_grad)


def _rebuild_parameter(data: Any, requires_grad: Any, backward_hooks: Any) -> ParameterStub:
    return ParameterStub(data, requires_grad)


def _rebuild_parameter_with_state(data: Any, requires_grad: Any, backward_hooks: Any, state: Any) -> ParameterStub:
    return ParameterStub(data, requires_grad, _object_state(state))


_TENSOR = TorchType()
_PARAMETER = TorchType()
_REBUILD_FUNCTIONS = (_rebuild_tensor, _rebuild_tensor_v2, _rebuild_tensor_v3, _rebuild_parameter,
                      _rebuild_parameter_with_state)


def _rebuild_from_type_v2(func: Any, new_type: Any, args: Any, state: Any) -> Any:
    # A tensor with Python attributes (`state`): kept on the stub, set by load_torch as torch's _set_obj_state
    # sets them; a state dict for a model drops them (they are not tensor data).
    if not any(func is f for f in _REBUILD_FUNCTIONS) or not (new_type is _TENSOR or new_type is _PARAMETER) \
            or type(args) is not tuple:
        raise CheckpointError("_rebuild_from_type_v2 must wrap a tensor rebuild function, a tensor type "
                              "and an argument tuple")
    built = func(*args)
    attributes = _object_state(state)
    if attributes and type(built) in (TensorStub, ParameterStub):
        built.attributes = attributes
    return built


def _object_state(state: Any) -> dict:
    """The attributes of torch._utils._get_obj_state's state: a dict, or a (dict, slots dict) pair."""
    parts = state if type(state) is tuple and len(state) == 2 else (state,)
    attributes: dict = {}
    for part in parts:
        if part is None:
            continue
        if type(part) is not dict or not all(type(key) is str for key in part):
            raise CheckpointError("a tensor's pickled state must be a dict of attribute names, or a pair of them")
        attributes.update(part)
    return attributes


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


def _size(dims: Any = ()) -> TorchSize:
    if not _is_index_tuple(tuple(dims) if type(dims) in (tuple, list) else None):
        raise CheckpointError("torch.Size takes a tuple of non-negative integers")
    return TorchSize(dims)


def _device(kind: Any, index: Any = None) -> TorchDevice:
    if type(kind) is not str or not (index is None or type(index) is int):
        raise CheckpointError("torch.device takes a device string and an optional integer index")
    return TorchDevice(kind if index is None else f"{kind}:{index}")


class PickledOrderedDict(OrderedDict):
    """collections.OrderedDict as a pickle may build it. BUILD may only give it a dict of attributes (a state
    dict's `_metadata`, module versions), kept in `attributes`: load_torch sets them on the OrderedDict it
    returns, as torch.load does; state dicts for a model drop them."""

    def __setstate__(self, state: Any) -> None:
        if type(state) is not dict or not all(type(key) is str for key in state):
            raise CheckpointError("BUILD on a dict takes a dict of attribute names")
        self.attributes = state


class PickledCounter(Counter):
    __setstate__ = PickledOrderedDict.__setstate__


# torch's storage classes (torch/storage.py _dtype_to_storage_type_map) with a safetensors dtype.
_STORAGE_DTYPES = {
    "Double": "F64", "Float": "F32", "Half": "F16", "BFloat16": "BF16", "Long": "I64", "Int": "I32",
    "Short": "I16", "Char": "I8", "Byte": "U8", "Bool": "BOOL", "ComplexFloat": "C64",
    "ComplexDouble": "C128",
}

# Globals resolve here by "module.name", as torch matches them. F4 (float4_e2m1fn_x2) is left out:
# safetensors counts its values, torch its bytes, so its strided views need a rule of their own.
SAFE_GLOBALS: dict[str, Any] = {
    "collections.OrderedDict": PickledOrderedDict,
    "collections.Counter": PickledCounter,
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
    "torch._utils._rebuild_meta_tensor_no_storage": _rebuild_meta_tensor_no_storage,
    "torch.storage.UntypedStorage": StorageType(None),
}
SAFE_GLOBALS.update({f"{module}.{kind}Storage": StorageType(dtype)
                     for module in ("torch", "torch.cuda") for kind, dtype in _STORAGE_DTYPES.items()})
SAFE_GLOBALS.update({f"torch.{info.torch_name}": TorchDtype(info.name)
                     for info in (*DTYPES.values(), *TORCH_EXTRA_DTYPES.values())
                     if info.torch_name is not None and info.name != "F4"})

# The rest of torch 2.13's weights-only allow-list: safe to read, but not dense tensors warpload returns.
_TENSOR_KINDS = ("BFloat16", "Byte", "Char", "Double", "Float", "Half", "Int", "Long", "Short")
TORCH_ONLY_GLOBALS = frozenset(
    [f"torch._utils._rebuild_{kind}" for kind in (
        "qtensor", "sparse_tensor", "nested_tensor", "wrapper_subclass",
        "device_tensor_from_numpy", "device_tensor_from_cpu_tensor")]
    + ["torch.serialization._get_layout", "torch.storage.TypedStorage"]
    + [f"torch.{scheme}" for scheme in ("per_tensor_affine", "per_tensor_symmetric", "per_channel_affine",
                                        "per_channel_symmetric", "per_channel_affine_float_qparams")]
    + [f"{module}.{kind}Tensor" for module in ("torch", "torch.cuda") for kind in _TENSOR_KINDS + ("Bool",)]
    + [f"{module}.{kind}Tensor" for module in ("torch.sparse", "torch.cuda.sparse") for kind in _TENSOR_KINDS]
)
TORCH_ONLY_DTYPES = frozenset(
    [f"torch.{name}" for name in ("qint8", "qint32", "quint8", "quint4x2", "quint2x4",
                                  "float4_e2m1fn_x2", "bits16", "bits1x8", "bits2x4", "bits4x2", "bits8")]
    + [f"torch.{kind}{bits}" for kind in ("uint", "int") for bits in range(1, 8)]
    + [f"torch.{kind}Storage" for kind in ("QInt8", "QInt32", "QUInt8", "QUInt4x2", "QUInt2x4")]
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
        raise UnsupportedFormatError(f"{where}: uses {full_name} (a quantized, sparse, nested or subclassed "
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


@dataclass(frozen=True)
class TorchFile:
    """What a torch.save file holds: the unpickled object (stand-ins for tensors, storages, sizes, dtypes) and
    every storage whose bytes it has, in the order the reader found them."""

    path: str
    state: Any
    storages: tuple[StorageRef, ...]


# Where training scripts put a model's state dict: {"state_dict": ...} (Lightning), {"model": ...},
# {"module": ...} (DeepSpeed, DDP wrappers). Searched in this order, at most this deep.
STATE_DICT_WRAPPERS = ("state_dict", "model", "module")
_WRAPPER_DEPTH = 3


_TENSOR_STUBS = (TensorStub, ParameterStub, MetaTensorStub)


def _is_state_dict(value: Any) -> bool:
    return isinstance(value, dict) and all(type(name) is str and type(tensor) in _TENSOR_STUBS
                                           for name, tensor in value.items())


def find_state_dict(state: Any, path: str) -> dict:
    """The name -> tensor mapping of an unpickled checkpoint: the object itself, else the first one under the
    wrapper keys (STATE_DICT_WRAPPERS), searched depth first. Raises UnsupportedFormatError naming the first
    entry that is not a tensor when there is none."""
    found = _wrapped_state_dict(state, _WRAPPER_DEPTH)
    if found is not None:
        return found
    if not isinstance(state, dict):
        raise UnsupportedFormatError(
            f"{path}: holds a pickled {type(state).__name__}, not a state dict; a model loads from a dict of "
            "tensors: warpload.load_torch (or load_checkpoint of the file) returns the rest", path=path)
    for name, value in state.items():
        if type(name) is not str or type(value) not in _TENSOR_STUBS:
            label = repr(name[:100]) if type(name) is str else f"of type {type(name).__name__}"
            raise UnsupportedFormatError(
                f"{path}: entry {label} is a {type(value).__name__}, not a tensor, and the file has no state dict "
                f"under {', '.join(map(repr, STATE_DICT_WRAPPERS))}; a model loads from a state dict (name -> "
                "tensor): warpload.load_torch (or load_checkpoint of the file) returns training checkpoints whole",
                path=path)
    return state  # a dict of tensors: a state dict after all


def _wrapped_state_dict(state: Any, depth: int) -> Optional[dict]:
    if _is_state_dict(state):
        return state
    if depth == 0 or not isinstance(state, dict):
        return None
    for key in STATE_DICT_WRAPPERS:
        found = _wrapped_state_dict(state.get(key), depth - 1)
        if found is not None:
            return found
    return None


def state_dict_records(state: Any, path: str) -> list[TensorRecord]:
    """Plan records for the state dict of an unpickled checkpoint (find_state_dict), in the dict's order.

    Raises UnsupportedFormatError when the pickle holds no state dict (a bare tensor, a training checkpoint
    without a wrapper key) or tensors a model cannot load from (meta, math bits), CheckpointError when a
    tensor does not fit in its storage.
    """
    records = []
    for name, value in find_state_dict(state, path).items():
        tensor = value.data if type(value) is ParameterStub else value
        if type(tensor) is MetaTensorStub:
            raise UnsupportedFormatError(f"{path}: tensor {name!r} is a meta tensor, with no data to load; "
                                         "warpload.load_torch returns it as torch.load does", path=path, tensor=name)
        records.append(tensor.record(name, path))
    return records
