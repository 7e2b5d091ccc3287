"""from_pretrained's placement options: device_map (one device, a strategy or a module -> device dict), max_memory,
offload_folder and offload_buffers, checked as transformers 5 checks them, and the module -> device map of a meta
model (the planner for strategies, loading/planner.py)."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional, Union

from ..errors import DeviceMapError
from .planner import STRATEGIES, UNSET_BUDGET_FRACTION, Device, order_budgets, plan_device_map

if TYPE_CHECKING:
    import torch
    from torch import nn

OFFLOADED = ("cpu", "disk")


@dataclass(frozen=True)
class PlacementRequest:
    """A device_map that spreads the model: a strategy, or {module: device} naming several devices or the disk."""

    device_map: Union[str, dict[str, Device]]
    max_memory: Optional[dict]
    offload_folder: Optional[str]
    offload_buffers: bool


def context_device() -> Optional["torch.device"]:
    """The device of an enclosing `with torch.device(...)` (or a non-CPU default device), as transformers 5 reads
    it for device_map=None; None for the CPU. Raises RuntimeError for meta, with transformers' message."""
    import torch

    in_context, default = torch.tensor([]).device, torch.get_default_device()
    device = (default if default != torch.device("cpu") else None) if in_context == default else in_context
    if device == torch.device("meta"):
        raise RuntimeError("You are using `from_pretrained` with a meta device context manager or "
                           "`torch.set_default_device('meta')`.\nThis is an anti-pattern as `from_pretrained` wants "
                           "to load existing weights.\nIf you want to initialize an empty model on the meta device, "
                           "use the context manager or global device with `from_config`, or `ModelClass(config)`")
    return device


def map_device(value: Any) -> Device:
    """One device_map value as accelerate writes it: an int for a GPU (0, "cuda:0", torch.device("cuda", 0) are
    one device), else "cpu", "disk", "mps". Raises DeviceMapError for anything else."""
    import torch

    if isinstance(value, int) and not isinstance(value, bool):
        if value < 0:
            raise DeviceMapError("You can't pass device_map as a negative int. If you want to put the model on the "
                                 "cpu, pass device_map = 'cpu'")
        return value
    if value in ("disk", "cpu", "mps"):
        return value
    try:
        device = torch.device(value)
    except (RuntimeError, TypeError) as err:
        raise DeviceMapError(f"device_map value {value!r}: when passing device_map as a string, the value needs to "
                             "be a device name (e.g. cpu, cuda:0) or 'auto', 'balanced', 'balanced_low_0', "
                             f"'sequential' but found {value}.") from err
    if device.type == "cuda":
        return device.index if device.index is not None else int(os.environ.get("LOCAL_RANK", 0))
    if device.type in ("cpu", "mps"):
        return device.type
    raise DeviceMapError(f"device_map value {value!r}: warpload places modules on 'cpu', 'disk', 'mps' or a CUDA "
                         f"device (an index, 'cuda:N'), not on {device.type!r}")


def parse_device_map(device_map: Any, max_memory: Optional[dict], offload_folder: Optional[str],
                     offload_buffers: bool) -> Union["torch.device", PlacementRequest]:
    """The one device a device_map names (the context device for None), or the PlacementRequest of one that spreads
    the model. Raises DeviceMapError (a ValueError) for unknown devices or strategies, and RuntimeError for meta."""
    import torch

    if device_map is None:
        device_map = context_device() or "cpu"
    if isinstance(device_map, str) and device_map in STRATEGIES:
        return PlacementRequest(device_map, max_memory, offload_folder, offload_buffers)
    if isinstance(device_map, dict):
        devices = {key: map_device(value) for key, value in device_map.items()}
        if len(set(devices.values())) > 1 or "disk" in devices.values():
            return PlacementRequest(devices, max_memory, offload_folder, offload_buffers)
        if not devices:
            raise DeviceMapError("device_map={} names no device: pass {'': 'cpu'}, a device, or 'auto'")
        device_map = next(iter(devices.values()))
    if isinstance(device_map, str) and device_map == "cuda":
        device_map = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
    device = map_device(device_map)
    return torch.device("cuda", device) if isinstance(device, int) else torch.device(device)


def machine_budgets() -> dict[Device, int]:
    """transformers' get_max_memory() without max_memory: each GPU's free memory, 90% of the available RAM."""
    import torch

    budgets: dict[Device, int] = {}
    if torch.cuda.is_available():
        for index in range(torch.cuda.device_count()):
            free, _ = torch.cuda.mem_get_info(index)
            budgets[index] = free + torch.cuda.memory_reserved(index) - torch.cuda.memory_allocated(index)
    budgets["cpu"] = int(available_ram() * UNSET_BUDGET_FRACTION)
    return budgets


def available_ram() -> int:
    """MemAvailable of /proc/meminfo (what psutil.virtual_memory().available reports on Linux)."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def resolve_placement(request: PlacementRequest, model: "nn.Module", dtype: "torch.dtype") -> dict[str, Device]:
    """The module -> device map for a meta model: the planner's for a strategy, the caller's dict checked to cover
    every parameter. Raises DeviceMapError for unknown max_memory devices or a dict that misses parameters."""
    from .module_tree import module_tree, no_split_classes, tied_groups

    if isinstance(request.device_map, dict):
        check_covers(model, request.device_map)
        return dict(request.device_map)
    user_set = request.max_memory is not None
    budgets = order_budgets(dict(request.max_memory)) if user_set else machine_budgets()
    if hasattr(model, "reset_buffers") and hasattr(model, "no_split_modules"):
        model.reset_buffers("cpu")  # built-in rotary tables are empty on meta; transformers counts their bytes
    tree = module_tree(model, dtype)
    return plan_device_map(tree, request.device_map, budgets, no_split_classes(model), tied_groups(model),
                           user_set_budgets=user_set)


def check_covers(model: "nn.Module", device_map: dict[str, Device]) -> None:
    """accelerate's check_device_map: every parameter falls under a device_map entry."""
    uncovered = [name for name, _ in model.named_parameters() if device_of(device_map, name) is None]
    if uncovered:
        raise DeviceMapError("The device_map provided does not give any device for the following parameters: "
                             f"{', '.join(uncovered)}")


def device_of(device_map: dict[str, Device], key: str) -> Optional[Device]:
    """The device of a parameter or buffer name: its longest module prefix in the map (transformers'
    expand_device_map), None when no entry covers it."""
    for prefix in sorted(device_map, key=lambda name: (name.count("."), len(name)), reverse=True):
        if prefix == "" or key == prefix or key.startswith(prefix + "."):
            return device_map[prefix]
    return None


def execution_device(device_map: dict[str, Device]) -> Device:
    """Where offloaded modules compute: the first GPU of the map (dispatch_model's main device), else the CPU."""
    gpus = [device for device in device_map.values() if device not in OFFLOADED]
    return gpus[0] if gpus else "cpu"


def needs_hooks(device_map: dict[str, Device]) -> bool:
    """Whether transformers dispatches with hooks (and sets hf_device_map): several devices, or the disk."""
    devices = set(device_map.values())
    return len(devices) > 1 or "disk" in devices

