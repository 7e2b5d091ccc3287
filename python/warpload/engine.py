"""Runs load plans through the C++ engine and wraps the bytes it wrote as torch tensors."""
from __future__ import annotations

import sys
import threading
from array import array
from typing import TYPE_CHECKING, Any, Mapping, Optional, Sequence

from . import constants
from .dtypes import DTYPES, element_count, torch_dtype
from .plan import LoadPlan, PlannedTensor

if TYPE_CHECKING:
    import torch


def core():
    """The compiled extension, imported on first use so `import warpload` stays cheap."""
    from . import _core

    return _core


def open_files(paths: Sequence[str]) -> list:
    return [core().File(path) for path in paths]


def tensor_view(buffer: Any, offset: int, dtype: str, shape: tuple[int, ...]) -> "torch.Tensor":
    """A tensor over buffer[offset:], keeping buffer alive; it owns no copy of the bytes."""
    import torch

    torch_type = torch_dtype(dtype)
    if dtype == "F4":
        # torch packs two F4 values per byte; the header shape counts logical values (formats.md 1.4).
        shape = shape[:-1] + (shape[-1] // 2,)
    count = element_count(shape)
    if count == 0:
        return torch.empty(shape, dtype=torch_type)
    return torch.frombuffer(buffer, dtype=torch_type, count=count, offset=offset).view(shape)


def plan_table(plan: LoadPlan, dst_address: int) -> array:
    """The engine's int64 row table: file, src offset, src bytes, src dtype, dst address, dst dtype."""
    file_index = {path: i for i, path in enumerate(plan.paths)}
    table = array("q")
    for tensor in plan.tensors:
        record = tensor.record
        if tensor.converts:
            src_code, dst_code = DTYPES[record.dtype].engine_code, DTYPES[tensor.dtype].engine_code
        else:
            src_code = dst_code = 0
        table.extend((file_index[record.path], record.offset, record.nbytes, src_code,
                      dst_address + tensor.dst_offset, dst_code))
    return table


def execute(plan: LoadPlan, files: Optional[Sequence[Any]] = None) -> Any:
    """Runs a plan into a fresh huge-page buffer, in parallel with the GIL released; returns the buffer.

    Raises CheckpointError for a plan that reads outside its files, EngineIOError for a failed read.
    """
    _core = core()
    if files is None:
        files = open_files(plan.paths)
    buffer = _core.HostBuffer(plan.total_nbytes)
    _core.execute(list(files), plan_table(plan, buffer.address), constants.read_method(), constants.num_threads())
    return buffer


def execute_while_importing_torch(plan: LoadPlan, files: Optional[Sequence[Any]] = None) -> Any:
    """execute(), overlapped with the first `import torch` of the process when there is one.

    On a cold start importing torch takes about a second, longer than loading a 1 GB file; the
    engine releases the GIL, so both proceed at once.
    """
    if "torch" in sys.modules:
        return execute(plan, files)
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["buffer"] = execute(plan, files)
        except BaseException as err:  # re-raised in the caller's thread below
            outcome["error"] = err

    worker = threading.Thread(target=run, name="warpload-load", daemon=True)
    worker.start()
    import torch  # noqa: F401  (the import is the point)

    worker.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["buffer"]


def materialize(plan: LoadPlan, device: Any = "cpu",
                files: Optional[Sequence[Any]] = None) -> dict[str, "torch.Tensor"]:
    """Loads every tensor of the plan into memory it owns (one buffer), then onto device."""
    buffer = execute_while_importing_torch(plan, files)
    tensors = {t.record.name: tensor_view(buffer, t.dst_offset, t.dtype, t.record.shape) for t in plan.tensors}
    return move_to_device(tensors, device)


def zero_copy_views(planned: Sequence[PlannedTensor], files: Mapping[str, Any]) -> dict[str, "torch.Tensor"]:
    """Tensors that view the mapped files directly: no copy, pages are read when first touched."""
    return {t.record.name: tensor_view(files[t.record.path], t.record.offset, t.record.dtype, t.record.shape)
            for t in planned}


def move_to_device(tensors: dict[str, "torch.Tensor"], device: Any) -> dict[str, "torch.Tensor"]:
    import torch

    target = torch.device(device)
    if target.type == "cpu":
        return tensors
    return {name: tensor.to(target) for name, tensor in tensors.items()}
