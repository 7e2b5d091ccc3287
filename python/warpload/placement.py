"""Places checkpoint tensors straight into preallocated parameters: the engine copies bytes to their final storage."""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Mapping, Optional, Sequence

from . import constants, engine
from .dtypes import CONVERSION_TARGETS, DTYPES, dtype_name, element_count
from .engine import contiguous_stride
from .plan import TensorRecord, plan_load, target_dtype

if TYPE_CHECKING:
    import torch

# The engine maps each file whole and converts from the mapping when the file is in the page
# cache; a mapped page it has read stays in the resident set until the mapping closes. So one
# engine call that converts a warm 1.35 GB fp32 file to bf16 peaks at the output plus the whole
# input (measured: +2030 MiB for 677 MiB of parameters). Reading in windows, each through its own
# mapping closed after it, bounds the extra to one window (+~64 MiB, 0.36 s either way for GPT-2
# medium on 2 cores). Plain copies are read with pread and cost nothing extra. Windows grow with
# the thread count so each thread still gets several of the engine's 4 MiB chunks per window.
WINDOW_MIN_BYTES = 64 << 20
WINDOW_BYTES_PER_THREAD = 16 << 20


@dataclass(frozen=True)
class _Piece:
    """Part of one record's bytes, the target its converted elements go to and their byte offset there."""

    record: TensorRecord
    target: "torch.Tensor"
    offset: int
    target_dtype: str


def load_into(targets: Mapping[str, "torch.Tensor"], records: Mapping[str, TensorRecord]) -> None:
    """Fills each CPU or CUDA tensor targets[key] with the checkpoint tensor records[key], converting its dtype.

    Plain contiguous records go straight from the file into the target's memory in parallel
    engine passes (floats converted on the way, as plan_load converts); CUDA targets are filled
    through the pinned ring and converted on the device (cuda.load_into). Records that view part of
    a shared storage (PyTorch .bin slices and tied tensors) are copied from a target that received
    their whole storage, or, when none did, materialised and copied. Shapes must already agree in
    element count. Raises CheckpointError / EngineIOError from the engine.
    """
    direct: dict[str, tuple[TensorRecord, "torch.Tensor"]] = {}
    views: list[tuple[str, str]] = []  # (key, key of the target holding its storage)
    materialised: list[str] = []
    by_storage: dict[tuple, list[str]] = defaultdict(list)
    for key, record in records.items():
        by_storage[(record.path, record.offset, record.nbytes, record.dtype)].append(key)
    for keys in by_storage.values():
        owner = next((k for k in keys if _receives_whole_storage(records[k], targets[k])), None)
        for key in keys:
            if key == owner:
                direct[key] = (records[key], targets[key])
            elif owner is not None and targets[key].dtype == targets[owner].dtype:
                views.append((key, owner))
            else:
                materialised.append(key)
    on_gpu = [pair for pair in direct.values() if pair[1].device.type == "cuda"]
    if on_gpu:
        from . import cuda

        cuda.load_into(on_gpu)
    _copy_direct([pair for pair in direct.values() if pair[1].device.type != "cuda"])
    for key, owner in views:
        record = records[key]
        stride = record.stride if record.stride is not None else contiguous_stride(record.shape)
        storage = targets[owner].view(-1)
        targets[key].copy_(storage.as_strided(record.shape, stride, record.storage_offset).view(targets[key].shape))
    if materialised:
        _copy_materialised(materialised, targets, records)


def _receives_whole_storage(record: TensorRecord, target: "torch.Tensor") -> bool:
    """Whether the engine can write record's storage into target's memory: CPU or CUDA, contiguous, same
    element count, the record spanning its storage from element 0, and the planned dtype equal."""
    if target.device.type not in ("cpu", "cuda") or not target.is_contiguous() or record.dtype not in DTYPES:
        return False
    count = element_count(record.shape)
    if count != target.numel() or count * DTYPES[record.dtype].bits != record.nbytes * 8:
        return False
    if record.storage_offset != 0 or (record.stride is not None and count > 1
                                      and tuple(record.stride) != contiguous_stride(record.shape)):
        return False
    return _planned_dtype(record, target) == dtype_name(target.dtype)


def _planned_dtype(record: TensorRecord, target: "torch.Tensor") -> str:
    wanted = dtype_name(target.dtype)
    return target_dtype(record.dtype, wanted if wanted in CONVERSION_TARGETS else None)


def _copy_direct(pairs: Sequence[tuple[TensorRecord, "torch.Tensor"]]) -> None:
    pieces = sorted((piece for record, target in pairs for piece in _split(record, target)),
                    key=lambda p: (p.record.path, p.record.offset))
    window_limit = max(WINDOW_MIN_BYTES, WINDOW_BYTES_PER_THREAD * (constants.num_threads() or _cores()))
    by_dtype: dict[str, list[_Piece]] = defaultdict(list)
    for piece in pieces:
        by_dtype[piece.target_dtype].append(piece)
    for dtype, group in by_dtype.items():
        window: list[_Piece] = []
        size = 0
        for piece in group:
            window.append(piece)
            size += piece.record.nbytes
            if size >= window_limit:
                _run_window(window, dtype)
                window, size = [], 0
        if window:
            _run_window(window, dtype)


def _split(record: TensorRecord, target: "torch.Tensor") -> list[_Piece]:
    """The record as pieces of at most WINDOW_MIN_BYTES, cut on element boundaries, with their destinations."""
    dtype = dtype_name(target.dtype)
    if record.nbytes == 0:
        return []
    bits = DTYPES[record.dtype].bits
    if bits % 8 or record.transpose:  # a transposed matrix is copied whole: its rows land all over the target
        return [_Piece(record, target, 0, dtype)]
    itemsize, out_itemsize = bits // 8, target.element_size()
    step = max(WINDOW_MIN_BYTES // itemsize, 1)
    count = record.nbytes // itemsize
    pieces = []
    for start in range(0, count, step):
        length = min(step, count - start)
        part = replace(record, name=f"{record.name}[{start}:{start + length}]", shape=(length,),
                       offset=record.offset + start * itemsize, nbytes=length * itemsize, stride=None)
        pieces.append(_Piece(part, target, start * out_itemsize, dtype))
    return pieces


def _run_window(window: Sequence[_Piece], dtype: str) -> None:
    plan = plan_load([piece.record for piece in window], dtype if dtype in CONVERSION_TARGETS else None)
    region_of: dict[int, int] = {}  # id(target) -> its index in regions
    regions: list[tuple[int, int]] = []
    for piece in window:
        if id(piece.target) not in region_of:
            region_of[id(piece.target)] = len(regions)
            regions.append(engine.tensor_region(piece.target))
    destination = {(p.record.path, p.record.offset): (region_of[id(p.target)], p.offset) for p in window}
    files = engine.open_files(plan.paths)
    engine.run_table(plan, regions, [destination[(s.path, s.offset)] for s in plan.storages], files)
    del files  # closes the mappings, releasing the pages this window touched


def _copy_materialised(keys: Sequence[str], targets: Mapping[str, "torch.Tensor"],
                       records: Mapping[str, TensorRecord]) -> None:
    """Loads these records into one temporary buffer, then copies (and casts) them into their targets."""
    dtype: Optional[str] = None
    wanted = {dtype_name(targets[key].dtype) for key in keys}
    if len(wanted) == 1 and next(iter(wanted)) in CONVERSION_TARGETS:
        dtype = next(iter(wanted))
    loaded = engine.materialize(plan_load([records[key] for key in keys], dtype))
    for key in keys:
        targets[key].copy_(loaded[records[key].name].view(targets[key].shape))


def _cores() -> int:
    return engine.core().available_cores()
