"""The safetensors dtype names, their sizes, torch equivalents and engine conversion codes."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional

from .errors import UnsupportedDtypeError

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class DtypeInfo:
    name: str                 # safetensors header string
    bits: int                 # bits per logical element
    torch_name: Optional[str]  # attribute of the torch module, None when torch has none
    engine_code: int          # csrc/dtype.h DType; 0 (Raw) for dtypes the engine only copies
    # False for the dtypes warpload returns that safetensors has no name for (headers naming them are refused).
    in_safetensors: bool = True


# safetensors/src/tensor.rs `enum Dtype` and bindings/python torch names (formats.md section 1.4), then the
# dtypes other formats store that torch holds and safetensors cannot name (TF bundles' and Keras h5's complex128).
DTYPES = {
    info.name: info
    for info in (
        DtypeInfo("BOOL", 8, "bool", 0),
        DtypeInfo("F4", 4, "float4_e2m1fn_x2", 0),
        DtypeInfo("F6_E2M3", 6, None, 0),
        DtypeInfo("F6_E3M2", 6, None, 0),
        DtypeInfo("U8", 8, "uint8", 0),
        DtypeInfo("I8", 8, "int8", 0),
        DtypeInfo("F8_E5M2", 8, "float8_e5m2", 6),
        DtypeInfo("F8_E4M3", 8, "float8_e4m3fn", 5),
        DtypeInfo("F8_E8M0", 8, "float8_e8m0fnu", 0),
        DtypeInfo("F8_E4M3FNUZ", 8, "float8_e4m3fnuz", 0),
        DtypeInfo("F8_E5M2FNUZ", 8, "float8_e5m2fnuz", 0),
        DtypeInfo("I16", 16, "int16", 0),
        DtypeInfo("U16", 16, "uint16", 0),
        DtypeInfo("F16", 16, "float16", 3),
        DtypeInfo("BF16", 16, "bfloat16", 4),
        DtypeInfo("I32", 32, "int32", 0),
        DtypeInfo("U32", 32, "uint32", 0),
        DtypeInfo("F32", 32, "float32", 2),
        DtypeInfo("C64", 64, "complex64", 0),
        DtypeInfo("F64", 64, "float64", 1),
        DtypeInfo("I64", 64, "int64", 0),
        DtypeInfo("U64", 64, "uint64", 0),
        DtypeInfo("C128", 128, "complex128", 0, in_safetensors=False),
    )
}
# The names a safetensors header may use.
SAFETENSORS_DTYPES = frozenset(name for name, info in DTYPES.items() if info.in_safetensors)

# torch dtypes safetensors has no name for, which torch .bin files may hold (formats/torch_objects.py):
# read as their component dtype (pairs of F16 for complex32) and viewed as the torch dtype.
TORCH_EXTRA_DTYPES = {
    info.name: info for info in (DtypeInfo("C32", 32, "complex32", 0), DtypeInfo("C128", 128, "complex128", 0))
}
# What a complex element is made of: torch byte-swaps each component of a big-endian complex storage
# (torch/storage.py, _StorageBase.byteswap).
COMPLEX_COMPONENTS = {"C32": "F16", "C64": "F32", "C128": "F64"}


def dtype_info(name: str) -> DtypeInfo:
    """The DtypeInfo of a safetensors dtype, or of a torch-only one (TORCH_EXTRA_DTYPES)."""
    return DTYPES.get(name) or TORCH_EXTRA_DTYPES[name]


def byteswap_unit(name: Optional[str]) -> int:
    """The bytes torch reverses per unit of a big-endian storage of dtype `name` (an element, or a complex
    number's component); 0 for one-byte elements and untyped (None) storages, which torch leaves as they are."""
    if name is None:
        return 0
    size = dtype_info(COMPLEX_COMPONENTS.get(name, name)).bits // 8
    return size if size > 1 else 0


# csrc/dtype.h raw codes by element width: bit-exact copies that still know their element size.
_RAW_CODES = {8: 0, 16: 7, 32: 8, 64: 9}


def copy_code(name: str) -> int:
    """The engine code for copying `name` unchanged: its own code, else a raw code of its width."""
    info = DTYPES[name]
    return info.engine_code or _RAW_CODES.get(info.bits, 0)


# Targets of `dtype=`: the engine converts every float source it knows into these.
CONVERSION_TARGETS = ("F64", "F32", "F16", "BF16")
FLOAT_SOURCES = ("F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2")


def torch_dtype(name: str) -> "torch.dtype":
    """The torch dtype for a safetensors dtype name; raises UnsupportedDtypeError if torch lacks it."""
    import torch

    info = DTYPES[name]
    if info.torch_name is None or not hasattr(torch, info.torch_name):
        have = (f"torch.{info.torch_name} (needs a newer torch than {torch.__version__})" if info.torch_name
                else "no torch dtype")
        raise UnsupportedDtypeError(f"dtype {name} has {have}; it cannot be returned as a torch tensor")
    return getattr(torch, info.torch_name)


def dtype_name(dtype: Any) -> str:
    """The safetensors name of a torch dtype or a string ("bfloat16", "torch.float16", "BF16")."""
    if isinstance(dtype, str):
        text = dtype.removeprefix("torch.")
        if text.upper() in DTYPES:
            return text.upper()
        for info in DTYPES.values():
            if info.torch_name == text:
                return info.name
        aliases = {"float": "F32", "half": "F16", "double": "F64"}
        if text in aliases:
            return aliases[text]
        raise UnsupportedDtypeError(f"unknown dtype {dtype!r}; use a torch.dtype such as torch.bfloat16")
    for info in DTYPES.values():
        if info.torch_name is not None and str(dtype) == f"torch.{info.torch_name}":
            return info.name
    raise UnsupportedDtypeError(f"unsupported dtype {dtype!r}; use a torch.dtype such as torch.bfloat16")


def element_count(shape: tuple[int, ...]) -> int:
    count = 1
    for dim in shape:
        count *= dim
    return count
