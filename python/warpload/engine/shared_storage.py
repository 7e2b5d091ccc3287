"""Which tensors of a state dict share memory, by safetensors.torch's rule: save_file refuses them (tied weights)."""
from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING, Mapping

if TYPE_CHECKING:
    import torch


def storage_span(tensor: "torch.Tensor") -> tuple[int, int]:
    """(address, bytes) of the whole storage under a tensor; (0, 0) for the meta device, which has no memory."""
    if tensor.device.type == "meta":
        return 0, 0
    storage = tensor.untyped_storage()
    return storage.data_ptr(), storage.nbytes()


def _byte_span(tensor: "torch.Tensor") -> tuple[int, int]:
    """[first byte, one past the last element's byte) of a tensor, as safetensors measures it (its _end_ptr)."""
    start = tensor.data_ptr()
    if tensor.numel() == 0:
        return start, start
    return start, tensor.view(-1)[-1].data_ptr() + tensor.element_size()


def find_shared_tensors(state_dict: Mapping[str, "torch.Tensor"]) -> list[set[str]]:
    """The names grouped by the memory they use, as safetensors.torch._find_shared_tensors groups them: tensors
    on one storage (same device, address and size; meta and empty storages never share) whose byte spans overlap,
    chained in address order, form one set; the others are sets of one. Sets come in safetensors' order."""
    by_storage: dict[tuple, set[str]] = defaultdict(set)
    for name, tensor in state_dict.items():
        address, nbytes = storage_span(tensor)
        if address != 0 and nbytes != 0:
            by_storage[(tensor.device, address, nbytes)].add(name)
    groups: list[set[str]] = []
    for names in sorted(by_storage.values()):
        if len(names) < 2:
            groups.append(names)
            continue
        spans = sorted((*_byte_span(state_dict[name]), name) for name in names)
        groups.append({spans[0][2]})
        last_stop = spans[0][1]
        for start, stop, name in spans[1:]:
            if start >= last_stop:
                groups.append({name})
            else:
                groups[-1].add(name)
            last_stop = stop
    return groups
