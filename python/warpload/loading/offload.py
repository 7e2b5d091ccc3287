"""CPU and disk offload of a placed model: tensors kept off the compute device, and the forward hooks that bring a
module's tensors onto it for its forward and release them after (accelerate's AlignDevicesHook, without accelerate).

A disk tensor is a TensorRecord: a safetensors checkpoint tensor already in the target dtype is read straight from
the checkpoint; any other is written once to `offload_folder` (one safetensors file per tensor and an index.json,
transformers' layout) and read back from there. A CPU tensor moves to a GPU compute device for its module's forward,
and the next offloaded module's copy starts on a side stream while the current one computes."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Union

import torch
from torch import nn

from .._fileio import write_atomically
from ..engine.fill import fill_parameters
from ..engine.mapped import REQUIRED, map_records, why_not_mapped
from ..errors import DeviceMapError
from ..formats.checkpoint import checkpoint_records
from ..plan import TensorRecord
from .load_state import Source, set_tensor

OFFLOAD_INDEX = "index.json"


@dataclass
class DiskOffload:
    """The disk-placed tensors of a load: key -> the record its bytes are read from, in the model's dtype."""

    folder: Optional[str]
    records: dict[str, TensorRecord] = field(default_factory=dict)
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    dtypes: dict[str, torch.dtype] = field(default_factory=dict)

    def add(self, key: str, source: Source, shape: tuple[int, ...], dtype: torch.dtype) -> None:
        """Records where key's bytes are: the checkpoint itself when they can be read as they are, else a copy
        written to the offload folder now (one tensor in memory at a time)."""
        self.shapes[key], self.dtypes[key] = tuple(shape), dtype
        if isinstance(source, TensorRecord) and why_not_mapped(source, dtype, "cpu") is None:
            self.records[key] = source
            return
        self.check_folder(key)
        if isinstance(source, TensorRecord):
            tensor = torch.empty(shape, dtype=dtype)
            fill_parameters({key: tensor}, {key: source})
        else:
            tensor = source.detach().to("cpu", dtype).reshape(shape)
        self.records[key] = self.write(key, tensor)

    def check_folder(self, key: str) -> None:
        """Raises DeviceMapError, worded as transformers', when key must be re-saved and there is no folder."""
        if self.folder is None:
            raise DeviceMapError(
                "The current `device_map` had weights offloaded to the disk, which needed to be re-saved. This is "
                "either because the weights are not in `safetensors` format, or because they are stored in another "
                f"dtype than the model's (tensor {key!r}). Please provide an `offload_folder` for them in "
                "`from_pretrained`.")

    def write(self, key: str, tensor: torch.Tensor) -> TensorRecord:
        """Writes tensor to <folder>/<key>.safetensors and the index; the record of its bytes there."""
        self.check_folder(key)
        os.makedirs(self.folder, exist_ok=True)
        path = os.path.join(self.folder, f"{key}.safetensors")
        write_atomically(path, lambda tmp: write_safetensors(tmp, key, tensor))
        index_path = os.path.join(self.folder, OFFLOAD_INDEX)
        index = {}
        if os.path.isfile(index_path):
            with open(index_path) as file:
                index = json.load(file)
        index[key] = {"safetensors_file": path, "weight_name": key,
                      "dtype": str(tensor.dtype).removeprefix("torch.")}
        write_atomically(index_path, lambda tmp: _write_json(tmp, index))
        return checkpoint_records(path)[0]

    def tie(self, pairs: Mapping[str, str]) -> None:
        """Tied targets of disk-placed sources are read from the same bytes."""
        for target, source in pairs.items():
            if source in self.records and target not in self.records:
                self.records[target], self.shapes[target] = self.records[source], self.shapes[source]
                self.dtypes[target] = self.dtypes[source]

    def load(self, keys: list[str], device: Any) -> dict[str, torch.Tensor]:
        """Tensors of keys on device: on the CPU, views of the mapped files (pages read in parallel; the mapping
        closes, and its pages leave the resident set, when the views are released), else fresh tensors the engine
        fills. Copies into fresh CPU memory would not leave it: freed blocks of a few MiB stay in malloc's heap
        (measured: +25 MiB resident after one forward of a 46 MB GPT-2 whose memory budget was 11 MB)."""
        if torch.device(device).type == "cpu":
            return map_records({key: self.records[key] for key in keys}, self.dtypes, "cpu", REQUIRED)
        targets = {key: torch.empty(self.shapes[key], dtype=self.dtypes[key], device=device) for key in keys}
        fill_parameters(targets, {key: self.records[key] for key in keys})
        return targets


def write_safetensors(path: str, key: str, tensor: torch.Tensor) -> None:
    """One tensor as a safetensors file (warpload.save_file: safetensors' bytes, through the engine)."""
    from ..tensors import save_file

    save_file({key: tensor.contiguous()}, path)


def _write_json(path: str, value: Any) -> None:
    with open(path, "w") as file:
        json.dump(value, file, indent=2)


def _meta_like(tensor: torch.Tensor) -> torch.Tensor:
    return torch.empty(tensor.shape, dtype=tensor.dtype, device="meta")


class OffloadHook:
    """Brings one module's offloaded tensors (full model keys) onto `device` before its forward and releases them
    after: disk tensors are read from their records, CPU tensors copied (on a side stream for CUDA, started by the
    previous hook so it overlaps that module's compute)."""

    def __init__(self, model: nn.Module, keys: list[str], device: Union[str, torch.device], disk: DiskOffload,
                 host: Mapping[str, torch.Tensor]) -> None:
        self.model, self.keys, self.device, self.disk = model, keys, torch.device(device), disk
        self.host = dict(host)  # key -> its CPU tensor, for modules placed on "cpu" with a GPU compute device
        self.next: Optional["OffloadHook"] = None
        self.ready: Optional[dict[str, torch.Tensor]] = None
        self.event: Any = None

    def prefetch(self) -> None:
        """Starts this module's CPU -> device copies (asynchronous on CUDA), so its forward finds them there."""
        if self.ready is not None or not self.host:
            return
        if self.device.type == "cuda":
            stream = copy_stream(self.device)
            with torch.cuda.stream(stream):
                self.ready = {key: tensor.to(self.device, non_blocking=True) for key, tensor in self.host.items()}
            self.event = torch.cuda.Event()
            self.event.record(stream)
        else:
            self.ready = {key: tensor.to(self.device) for key, tensor in self.host.items()}

    def pre_forward(self, module: nn.Module, args: Any) -> None:
        self.prefetch()
        if self.event is not None:
            torch.cuda.current_stream(self.device).wait_event(self.event)
        tensors = dict(self.ready or {})
        if self.event is not None:
            for tensor in tensors.values():  # made on the copy stream, used on this one: keep it from reuse
                tensor.record_stream(torch.cuda.current_stream(self.device))
        disk_keys = [key for key in self.keys if key not in self.host]
        tensors.update(self.disk.load(disk_keys, self.device) if disk_keys else {})
        for key, tensor in tensors.items():
            # No gradient: an autograd graph of the forward would keep every layer's weights alive.
            set_tensor(self.model, key, tensor).requires_grad_(False)
        self.ready, self.event = None, None
        if self.next is not None:
            self.next.prefetch()

    def post_forward(self, module: nn.Module, args: Any, output: Any) -> None:
        for key in self.keys:  # between forwards offloaded tensors wait on meta, as accelerate leaves them
            set_tensor(self.model, key, _meta_like(self.model.get_parameter(key)))


_COPY_STREAMS: dict[Any, Any] = {}


def copy_stream(device: torch.device) -> Any:
    """One side stream per device for the offload copies."""
    if device not in _COPY_STREAMS:
        _COPY_STREAMS[device] = torch.cuda.Stream(device)
    return _COPY_STREAMS[device]


def attach_offload_hooks(model: nn.Module, groups: list[tuple[str, list[str]]], device: Any, disk: DiskOffload,
                         offload_cpu: bool) -> list[OffloadHook]:
    """Hooks, in forward order, on each (module name, its offloaded keys) group; with offload_cpu, the CPU-held
    keys become the hook's host copies and their parameters go to meta until the forward."""
    hooks: list[OffloadHook] = []
    for name, keys in groups:
        host = {}
        if offload_cpu:
            host = {key: model.get_parameter(key).detach() for key in keys if key not in disk.records}
            for key, tensor in host.items():
                set_tensor(model, key, _meta_like(tensor))
        hook = OffloadHook(model, keys, device, disk, host)
        module = model.get_submodule(name)
        module.register_forward_pre_hook(hook.pre_forward)
        module.register_forward_hook(hook.post_forward)
        if hooks:
            hooks[-1].next = hook
        hooks.append(hook)
    return hooks
