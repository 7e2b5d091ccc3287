"""Device backends, registered by device type: how a plan becomes tensors on a device, and how records fill
tensors already there. A device type without a backend of its own (or whose backend cannot run here: CUDA
without a GPU) is served by the host backend, which loads on the CPU and moves the tensors."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Optional, Sequence

from ..plan import LoadPlan, TensorRecord
from . import host

if TYPE_CHECKING:
    import torch

Tensors = dict[str, "torch.Tensor"]


@dataclass(frozen=True)
class DeviceBackend:
    """What the engine does for one device type."""

    name: str
    # Whether the backend can serve this device on this machine (CUDA: torch sees a GPU).
    serves: Callable[[Any], bool]
    # (plan, device, open files or None) -> every planned tensor, on the device, in memory it owns.
    materialize: Callable[[LoadPlan, Any, Optional[Sequence[Any]]], Tensors]
    # [(record, target tensor)]: each record's bytes into its target, which holds exactly its storage.
    fill_tensors: Callable[[Sequence[tuple[TensorRecord, "torch.Tensor"]]], None]


def _cuda() -> Any:
    from . import cuda

    return cuda


def _fill_host_tensors(pairs: Sequence[tuple[TensorRecord, "torch.Tensor"]]) -> None:
    from .host_fill import fill_host_tensors

    fill_host_tensors(pairs)


# The CUDA backend and the host fill are imported on first use: a load_file on the CPU imports neither
# (cuda.py alone was 6 ms of a first load's 40 ms of imports).
HOST = DeviceBackend("host", lambda device: True, host.materialize, _fill_host_tensors)
BACKENDS: dict[str, DeviceBackend] = {
    "cpu": HOST,
    "cuda": DeviceBackend("cuda", lambda device: _cuda().wanted(device),
                          lambda plan, device, files: _cuda().materialize(plan, device, files),
                          lambda pairs: _cuda().fill_tensors(pairs)),
}


def device_type(device: Any) -> str:
    """"cuda" for an index (safetensors reads an int as a CUDA device) and "cuda:N"; a torch.device's type;
    without importing torch."""
    if isinstance(device, int) and not isinstance(device, bool):
        return "cuda"
    return str(getattr(device, "type", device)).split(":")[0]


def backend_for(device: Any) -> DeviceBackend:
    """The backend that loads to `device` here."""
    backend = BACKENDS.get(device_type(device))
    return backend if backend is not None and backend.serves(device) else HOST


def fills_directly(device: Any) -> bool:
    """Whether the engine writes straight into tensors on `device` (else they are filled on the CPU and moved)."""
    return device_type(device) == "cpu" or backend_for(device) is not HOST


def materialize(plan: LoadPlan, device: Any = "cpu", files: Optional[Sequence[Any]] = None) -> Tensors:
    """Loads every tensor of the plan onto `device` in memory it owns, through that device's backend; plans with
    big-endian storages through the host's (the CUDA ring copies raw bytes; byte swaps run on the host)."""
    backend = HOST if any(storage.byteswap for storage in plan.storages) else backend_for(device)
    return backend.materialize(plan, device, files)
