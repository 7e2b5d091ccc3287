"""Plain records that cross stage boundaries: what a tensor is and where its bytes are (no I/O here)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

from .constants import TENSOR_ALIGNMENT
from .dtypes import CONVERSION_TARGETS, DTYPES, FLOAT_SOURCES, element_count
from .errors import UnsupportedDtypeError


@dataclass(frozen=True)
class TensorRecord:
    """One tensor as a reader found it: its bytes are [offset, offset + nbytes) of path."""

    name: str
    dtype: str  # safetensors dtype name
    shape: tuple[int, ...]
    path: str
    offset: int
    nbytes: int


@dataclass(frozen=True)
class PlannedTensor:
    """A record, the dtype it is delivered in, and where it goes in the destination buffer."""

    record: TensorRecord
    dtype: str
    dst_offset: int
    dst_nbytes: int

    @property
    def converts(self) -> bool:
        return self.dtype != self.record.dtype


@dataclass(frozen=True)
class LoadPlan:
    tensors: tuple[PlannedTensor, ...]
    paths: tuple[str, ...]  # files in the order rows refer to them
    total_nbytes: int        # size of the destination buffer


def target_dtype(source: str, requested: Optional[str]) -> str:
    """The dtype a tensor is delivered in: floats convert to `requested`, everything else stays.

    Like transformers' `torch_dtype`, a requested dtype applies to floating-point tensors only;
    integer and bool tensors (token ids, masks, quantisation scales) keep their type.
    """
    if requested is None or source == requested or source not in FLOAT_SOURCES:
        return source
    if requested not in CONVERSION_TARGETS:
        raise UnsupportedDtypeError(
            f"cannot convert {source} tensors to {requested}: dtype= must be one of "
            f"float64, float32, float16, bfloat16 (convert further with Tensor.to after loading)"
        )
    return requested


def plan_load(records: Sequence[TensorRecord], dtype: Optional[str] = None) -> LoadPlan:
    """Lays the records out, in file order, in one destination buffer, each tensor 64-byte aligned."""
    file_index: dict[str, int] = {}
    for record in records:
        file_index.setdefault(record.path, len(file_index))
    order = sorted(records, key=lambda r: (file_index[r.path], r.offset))
    planned = []
    cursor = 0
    for record in order:
        out = target_dtype(record.dtype, dtype)
        nbytes = record.nbytes if out == record.dtype else element_count(record.shape) * DTYPES[out].bits // 8
        planned.append(PlannedTensor(record, out, cursor, nbytes))
        cursor += -(-nbytes // TENSOR_ALIGNMENT) * TENSOR_ALIGNMENT
    return LoadPlan(tuple(planned), tuple(file_index), cursor)
