"""Fills CPU tensors from records: the host backend's fill, in windows that bound the memory a conversion maps."""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Sequence

from .. import constants
from .._native import core
from ..dtypes import CONVERSION_TARGETS, DTYPES, dtype_name
from ..plan import TensorRecord, plan_load
from . import host

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
class Piece:
    """Part of one record's bytes, the target its converted elements go to and their byte offset there."""

    record: TensorRecord
    target: "torch.Tensor"
    offset: int
    target_dtype: str


def fill_host_tensors(pairs: Sequence[tuple[TensorRecord, "torch.Tensor"]]) -> None:
    """Copies (and converts) each record into its CPU target, which holds exactly its storage (fill_parameters).

    Raises CheckpointError / EngineIOError from the engine."""
    pieces = sorted((piece for record, target in pairs for piece in _split(record, target)),
                    key=lambda p: (p.record.path, p.record.offset))
    window_limit = max(WINDOW_MIN_BYTES, WINDOW_BYTES_PER_THREAD * (constants.num_threads() or _cores()))
    by_dtype: dict[str, list[Piece]] = defaultdict(list)
    for piece in pieces:
        by_dtype[piece.target_dtype].append(piece)
    for dtype, group in by_dtype.items():
        window: list[Piece] = []
        size = 0
        for piece in group:
            window.append(piece)
            size += piece.record.nbytes
            if size >= window_limit:
                _run_window(window, dtype)
                window, size = [], 0
        if window:
            _run_window(window, dtype)


def _split(record: TensorRecord, target: "torch.Tensor") -> list[Piece]:
    """The record as pieces of at most WINDOW_MIN_BYTES, cut on element boundaries, with their destinations."""
    dtype = dtype_name(target.dtype)
    if record.nbytes == 0:
        return []
    bits = DTYPES[record.dtype].bits
    if bits % 8 or record.transpose:  # a transposed matrix is copied whole: its rows land all over the target
        return [Piece(record, target, 0, dtype)]
    itemsize, out_itemsize = bits // 8, target.element_size()
    step = max(WINDOW_MIN_BYTES // itemsize, 1)
    count = record.nbytes // itemsize
    pieces = []
    for start in range(0, count, step):
        length = min(step, count - start)
        part = replace(record, name=f"{record.name}[{start}:{start + length}]", shape=(length,),
                       offset=record.offset + start * itemsize, nbytes=length * itemsize, stride=None)
        pieces.append(Piece(part, target, start * out_itemsize, dtype))
    return pieces


def _run_window(window: Sequence[Piece], dtype: str) -> None:
    plan = plan_load([piece.record for piece in window], dtype if dtype in CONVERSION_TARGETS else None)
    region_of: dict[int, int] = {}  # id(target) -> its index in regions
    regions: list[tuple[int, int]] = []
    for piece in window:
        if id(piece.target) not in region_of:
            region_of[id(piece.target)] = len(regions)
            regions.append(host.tensor_region(piece.target))
    destination = {(p.record.path, p.record.offset): (region_of[id(p.target)], p.offset) for p in window}
    files = host.open_files(plan.paths)
    host.run_table(plan, regions, [destination[(s.path, s.offset)] for s in plan.storages], files)
    del files  # closes the mappings, releasing the pages this window touched


def _cores() -> int:
    return core().available_cores()
