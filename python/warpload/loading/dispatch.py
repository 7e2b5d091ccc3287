"""A load over several devices: each key filled on its map's device (disk keys left on meta, loading/offload.py),
then the hooks that run it (accelerate's dispatch_model, without accelerate) and `hf_device_map`."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Union

import torch
from torch import nn

from ..errors import DeviceMapError
from .load_state import Source
from .offload import DiskOffload, attach_offload_hooks
from .options import LoadOptions
from .placement import OFFLOADED, Device, PlacementRequest, device_of, execution_device, needs_hooks, \
    resolve_placement


def torch_device(device: Device) -> torch.device:
    """The torch device of a device_map value (an int is a CUDA index)."""
    return torch.device("cuda", device) if isinstance(device, int) else torch.device(device)


@dataclass
class SpreadLoad:
    """The placement of one load: the module -> device map, the disk offload, and the map reported as
    hf_device_map (the caller's dict as given, or the planner's)."""

    device_map: dict[str, Device]
    disk: DiskOffload
    offload_buffers: bool
    reported: dict[str, Any]

    def device_for(self, key: str) -> Union[str, torch.device]:
        device = device_of(self.device_map, key)
        device = "cpu" if device is None else device
        return "disk" if device == "disk" else torch_device(device)

    def offload(self, key: str, source: Source, shape: tuple[int, ...], dtype: torch.dtype) -> None:
        self.disk.add(key, source, shape, dtype)

    def tie(self, pairs: Mapping[str, str]) -> None:
        self.disk.tie(pairs)

    @property
    def execution_device(self) -> torch.device:
        return torch_device(execution_device(self.device_map))

    def dispatch(self, model: nn.Module) -> None:
        """Puts buffers on their devices, hooks every offloaded module (forward order), moves inputs between
        GPUs, and sets model.hf_device_map."""
        compute = self.execution_device
        offload_cpu = compute.type not in ("cpu", "mps")
        self._place_buffers(model, compute)
        parameters = [name for name, _ in model.named_parameters(remove_duplicate=False)]
        modules = {name: index for index, (name, _) in enumerate(model.named_modules(remove_duplicate=False))}
        # Hooks go on the modules that hold the tensors (accelerate's attach_align_device_hook): a placed
        # container such as a ModuleList has no forward of its own.
        groups: dict[str, list[str]] = {}
        for key in parameters:
            device = device_of(self.device_map, key)
            if key in self.disk.records or (device == "cpu" and offload_cpu):
                groups.setdefault(key.rpartition(".")[0], []).append(key)
        ordered = sorted(groups.items(), key=lambda group: modules[group[0]])
        attach_offload_hooks(model, ordered, compute, self.disk, offload_cpu)
        if compute.type != "cpu":
            self._align_inputs(model, compute)
        model.hf_device_map = dict(self.reported)

    def _place_buffers(self, model: nn.Module, compute: torch.device) -> None:
        """Buffers stay with their module's GPU, or on the compute device for offloaded modules (offload_buffers is
        accepted; buffers are small next to the weights and stay in memory)."""
        for name, buffer in list(model.named_buffers()):
            device = device_of(self.device_map, name)
            target = compute if device in OFFLOADED or device is None else torch_device(device)
            if buffer.device != target and buffer.device.type != "meta":
                parent, _, leaf = name.rpartition(".")
                model.get_submodule(parent)._buffers[leaf] = buffer.to(target)

    def _align_inputs(self, model: nn.Module, compute: torch.device) -> None:
        """Tensor arguments follow each module to where it computes (its GPU, or the compute device for offloaded
        ones); the model's inputs go to the compute device and its outputs come back to the inputs' device
        (accelerate's io_same_device), so generate() concatenates on the caller's device."""
        for entry, device in self.device_map.items():
            target = compute if device in OFFLOADED else torch_device(device)
            for module in _computing_modules(model, entry):
                module.register_forward_pre_hook(_input_mover(target), with_kwargs=True)
        caller: list[torch.device] = []

        def to_compute(module: nn.Module, args: tuple, kwargs: dict) -> tuple:
            first = next((value for value in list(args) + list(kwargs.values()) if isinstance(value, torch.Tensor)),
                         None)
            caller.append(first.device if first is not None else compute)
            return move_tensors(args, compute), move_tensors(kwargs, compute)

        def to_caller(module: nn.Module, args: tuple, output: Any) -> Any:
            return move_tensors(output, caller.pop())

        model.register_forward_pre_hook(to_compute, with_kwargs=True)
        model.register_forward_hook(to_caller)


def _computing_modules(model: nn.Module, entry: str) -> list[nn.Module]:
    """The modules under a map entry whose forward runs: the entry itself, or a container's children."""
    try:
        module = model.get_submodule(entry)
    except AttributeError:
        return []  # a tensor entry: its module's own entry or hooks move its inputs
    if isinstance(module, (nn.ModuleList, nn.ModuleDict)):
        return [child for child in module.children()]
    return [module]


def move_tensors(value: Any, device: torch.device) -> Any:
    """value with every tensor in it (tuples, lists, dicts, ModelOutputs, dataclasses) on device; other objects
    (a KV cache) as they are, as accelerate's send_to_device leaves them."""
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, (list, tuple)) and not hasattr(value, "_fields"):
        return type(value)(move_tensors(item, device) for item in value)
    if isinstance(value, dict):
        for key in list(value):
            value[key] = move_tensors(value[key], device)
        return value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.replace(value, **{f.name: move_tensors(getattr(value, f.name), device)
                                            for f in dataclasses.fields(value) if f.init})
    return value


def _input_mover(device: torch.device) -> Any:
    def hook(module: nn.Module, args: tuple, kwargs: dict) -> tuple:
        return move_tensors(args, device), move_tensors(dict(kwargs), device)

    return hook


def plan_spread(options: LoadOptions, model: nn.Module, dtype: torch.dtype) -> Optional[SpreadLoad]:
    """The SpreadLoad of a call whose device_map spreads the model over the meta-built `model`, None for one device
    (then options.device is that device). Raises DeviceMapError for GPUs that are not visible, before any byte is
    read."""
    request: Optional[PlacementRequest] = options.placement
    if request is None:
        return None
    device_map = resolve_placement(request, model, dtype)
    gpus = sorted({device for device in device_map.values() if isinstance(device, int)})
    visible = torch.cuda.device_count() if torch.cuda.is_available() else 0
    missing = [index for index in gpus if index >= visible]
    if missing:
        placed = [name or "the model" for name, device in device_map.items() if device in missing]
        raise DeviceMapError(f"device_map places {', '.join(placed)} on GPU {', '.join(map(str, missing))}, but "
                             f"{visible} CUDA device(s) are visible: pass max_memory without those GPUs, or a "
                             "device_map with 'cpu' / 'disk' instead")
    if not needs_hooks(device_map):
        options.device = torch_device(next(iter(device_map.values())))
        return None
    reported = request.device_map if isinstance(request.device_map, dict) else device_map
    if isinstance(options.device_map, dict):
        reported = options.device_map
    spread = SpreadLoad(device_map, DiskOffload(request.offload_folder), request.offload_buffers, dict(reported))
    options.device = spread.execution_device
    return spread
