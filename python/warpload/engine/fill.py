"""Fills preallocated parameters from checkpoint records: the engine copies bytes straight into their final storage."""
from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING, Mapping, Optional, Sequence

from ..dtypes import CONVERSION_TARGETS, DTYPES, dtype_name, element_count
from ..plan import TensorRecord, plan_load, target_dtype
from .devices import DeviceBackend, backend_for, materialize
from .host import contiguous_stride

if TYPE_CHECKING:
    import torch

def fill_parameters(targets: Mapping[str, "torch.Tensor"], records: Mapping[str, TensorRecord]) -> None:
    """Fills each CPU or CUDA tensor targets[key] with the checkpoint tensor records[key], converting its dtype.

    Plain contiguous records go straight from the file into the target's memory in parallel
    engine passes (floats converted on the way, as plan_load converts); CUDA targets are filled
    through the pinned ring and converted on the device (cuda.load_into). Records that view part of
    a shared storage (PyTorch .bin slices and tied tensors) are copied from a target that received
    their whole storage, or, when none did, loaded into a buffer and copied. Shapes must already agree in
    element count. Raises CheckpointError / EngineIOError from the engine.
    """
    direct: dict[str, tuple[TensorRecord, "torch.Tensor"]] = {}
    views: list[tuple[str, str]] = []  # (key, key of the target holding its storage)
    loaded_then_copied: list[str] = []
    by_storage: dict[tuple, list[str]] = defaultdict(list)
    for key, record in records.items():
        by_storage[(record.path, record.offset, record.nbytes, record.dtype)].append(key)
    for keys in by_storage.values():
        owner = next((k for k in keys if receives_whole_storage(records[k], targets[k])), None)
        for key in keys:
            if key == owner:
                direct[key] = (records[key], targets[key])
            elif owner is not None and targets[key].dtype == targets[owner].dtype:
                views.append((key, owner))
            else:
                loaded_then_copied.append(key)
    by_backend: dict[DeviceBackend, list[tuple[TensorRecord, "torch.Tensor"]]] = defaultdict(list)
    for record, target in direct.values():
        by_backend[backend_for(target.device)].append((record, target))
    for backend, pairs in by_backend.items():
        backend.fill_tensors(pairs)
    for key, owner in views:
        record = records[key]
        stride = record.stride if record.stride is not None else contiguous_stride(record.shape)
        storage = targets[owner].view(-1)
        targets[key].copy_(storage.as_strided(record.shape, stride, record.storage_offset).view(targets[key].shape))
    if loaded_then_copied:
        _load_then_copy(loaded_then_copied, targets, records)


def receives_whole_storage(record: TensorRecord, target: "torch.Tensor") -> bool:
    """Whether the engine can write record's storage into target's memory: CPU or CUDA, contiguous, same
    element count, the record spanning its storage from element 0, and the planned dtype equal."""
    if target.device.type not in ("cpu", "cuda") or not target.is_contiguous() or record.dtype not in DTYPES:
        return False
    if record.byteswap and target.device.type != "cpu":
        return False  # byte swaps run on the host: loaded there, then copied (the CUDA ring copies raw bytes)
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


def _load_then_copy(keys: Sequence[str], targets: Mapping[str, "torch.Tensor"],
                       records: Mapping[str, TensorRecord]) -> None:
    """Loads these records into one temporary buffer, then copies (and casts) them into their targets."""
    dtype: Optional[str] = None
    wanted = {dtype_name(targets[key].dtype) for key in keys}
    if len(wanted) == 1 and next(iter(wanted)) in CONVERSION_TARGETS:
        dtype = next(iter(wanted))
    loaded = materialize(plan_load([records[key] for key in keys], dtype))
    for key in keys:
        targets[key].copy_(loaded[records[key].name].view(targets[key].shape))
