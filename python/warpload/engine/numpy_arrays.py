"""The engine's bytes as numpy arrays, for framework="np": no torch import (a cold `import torch` costs a
second, more than reading a 1 GB file), bfloat16 and float8 through the ml_dtypes package when it is installed."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping, Optional, Sequence

from ..errors import UnsupportedDtypeError
from ..plan import LoadPlan
from .host import execute

if TYPE_CHECKING:
    import numpy

# numpy's own names of the safetensors dtypes numpy holds (safetensors' get_pydtype for numpy).
_NUMPY_NAMES = {"BOOL": "bool", "U8": "uint8", "I8": "int8", "I16": "int16", "U16": "uint16", "F16": "float16",
                "I32": "int32", "U32": "uint32", "F32": "float32", "C64": "complex64", "F64": "float64",
                "I64": "int64", "U64": "uint64"}
# Those only ml_dtypes defines (its attribute names).
_ML_DTYPES_NAMES = {"BF16": "bfloat16", "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2",
                    "F8_E4M3FNUZ": "float8_e4m3fnuz", "F8_E5M2FNUZ": "float8_e5m2fnuz",
                    "F8_E8M0": "float8_e8m0fnu"}


def numpy_dtype(name: str) -> "numpy.dtype":
    """The numpy dtype of safetensors dtype `name`. Raises UnsupportedDtypeError when numpy has none (bfloat16
    and float8 need `pip install ml-dtypes`; 4- and 6-bit floats have no numpy type)."""
    import numpy

    if name in _NUMPY_NAMES:
        return numpy.dtype(_NUMPY_NAMES[name])
    if name not in _ML_DTYPES_NAMES:
        raise UnsupportedDtypeError(f"dtype {name} has no numpy equivalent; load it with framework='pt'")
    try:
        import ml_dtypes
    except ImportError:
        raise UnsupportedDtypeError(f"dtype {name} needs the ml_dtypes package for numpy arrays "
                                    "(`pip install ml-dtypes`), or load it with framework='pt'") from None
    attribute = _ML_DTYPES_NAMES[name]
    if not hasattr(ml_dtypes, attribute):
        raise UnsupportedDtypeError(f"dtype {name}: ml_dtypes {ml_dtypes.__version__} has no {attribute}; upgrade "
                                    "it (`pip install -U ml-dtypes`) or load with framework='pt'")
    return numpy.dtype(getattr(ml_dtypes, attribute))


def safetensors_name(dtype: Any) -> str:
    """The safetensors name of a numpy dtype (or anything numpy.dtype() takes, "bfloat16" with ml_dtypes)."""
    import numpy

    try:
        text = numpy.dtype(dtype).name
    except TypeError:
        text = str(dtype)
    for names in (_NUMPY_NAMES, _ML_DTYPES_NAMES):
        for name, numpy_name in names.items():
            if numpy_name == text:
                return name
    raise UnsupportedDtypeError(f"unsupported dtype {dtype!r} for framework='np'; use a numpy dtype such as "
                                "numpy.float16, or 'bfloat16'")


def _arrays(plan: LoadPlan, buffers: Sequence[Any], offsets: Sequence[int],
            dtypes: Sequence[str]) -> dict[str, "numpy.ndarray"]:
    import numpy

    arrays = {}
    for planned in plan.tensors:
        record = planned.record
        storage = plan.storages[planned.storage]
        numpy_type = numpy_dtype(dtypes[planned.storage])
        flat = numpy.frombuffer(buffers[planned.storage], dtype=numpy_type, count=storage.numel,
                                offset=offsets[planned.storage]) if storage.numel else numpy.empty(0, numpy_type)
        arrays[record.name] = flat.reshape(record.shape)
    return arrays


def _check_numpy_dtypes(plan: LoadPlan) -> None:
    """Every dtype must have a numpy type before a byte is read."""
    for storage in plan.storages:
        numpy_dtype(storage.dtype)


def materialize_numpy(plan: LoadPlan, files: Optional[Sequence[Any]] = None) -> dict[str, "numpy.ndarray"]:
    """Every tensor of the plan as a numpy array over one buffer the engine filled in parallel (writable; the
    arrays keep the buffer alive)."""
    _check_numpy_dtypes(plan)
    buffer = memoryview(execute(plan, files))
    storages = plan.storages
    return _arrays(plan, [buffer] * len(storages), [s.dst_offset for s in storages], [s.dtype for s in storages])


def numpy_views(plan: LoadPlan, files: Mapping[str, Any]) -> dict[str, "numpy.ndarray"]:
    """Arrays that view the mapped files (copy-on-write): nothing is read until a page is touched."""
    _check_numpy_dtypes(plan)
    views = {path: memoryview(file) for path, file in files.items()}
    storages = plan.storages
    return _arrays(plan, [views[s.path] for s in storages], [s.offset for s in storages],
                   [s.source_dtype for s in storages])
