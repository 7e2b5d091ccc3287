"""The planner's view of a model built on the meta device: its module tree with transformers' byte sizes, the
classes it must not split and its tied parameter groups (for built-in and transformers classes alike)."""
from __future__ import annotations

from collections import defaultdict
from typing import Any

import torch
from torch import nn

from .planner import ModuleNode


def tied_keys(model: nn.Module) -> dict[str, str]:
    """{tied target: source} parameter names: transformers' all_tied_weights_keys, or a built-in's tied_weights()."""
    if hasattr(model, "all_tied_weights_keys"):
        return dict(model.all_tied_weights_keys)
    return dict(model.tied_weights()) if hasattr(model, "tied_weights") else {}


def tied_groups(model: nn.Module) -> list[list[str]]:
    """The tied parameter groups, each sorted, as transformers' _init_infer_auto_device_map builds them."""
    ties = tied_keys(model)
    if not ties:
        return [[]]
    return [sorted([key for key, value in ties.items() if value == source] + [source]) for source in set(ties.values())]


def no_split_classes(model: nn.Module) -> frozenset[str]:
    """The class names never split across devices: a transformers model's `_no_split_modules`, a built-in's own."""
    names = getattr(model, "_no_split_modules", None)
    if names is None:
        names = getattr(model, "no_split_modules", ())
    return frozenset(names or ())


def module_sizes(model: nn.Module, dtype: torch.dtype) -> dict[str, int]:
    """transformers' compute_module_sizes(only_modules=False): bytes of every module and tensor, parameters and
    buffers (persistent or not), tied targets not counted, floating parameters in the target `dtype`."""
    sizes: dict[str, int] = defaultdict(int)
    skipped = tied_keys(model).keys()
    tensors = [(name, tensor, True) for name, tensor in model.named_parameters()]
    tensors += [(name, tensor, False) for name, tensor in model.named_buffers()]
    for name, tensor, is_parameter in tensors:
        if name in skipped:
            continue
        element = dtype.itemsize if is_parameter and tensor.is_floating_point() else tensor.element_size()
        size = tensor.numel() * element
        parts = name.split(".")
        for depth in range(len(parts)):
            sizes[".".join(parts[:depth])] += size
        sizes[name] += size
    return sizes


def module_tree(model: nn.Module, dtype: torch.dtype) -> ModuleNode:
    """The model as the planner's ModuleNode tree, sized in `dtype`."""
    sizes = module_sizes(model, dtype)

    def node(name: str, module: Any) -> ModuleNode:
        if not isinstance(module, nn.Module):
            return ModuleNode(name, sizes.get(name, 0))
        prefix = f"{name}." if name else ""
        return ModuleNode(
            name, sizes.get(name, 0), type(module).__name__,
            tuple(node(prefix + key, tensor) for key, tensor in module.named_parameters(recurse=False)),
            tuple(node(prefix + key, child) for key, child in module.named_children()),
            tuple(node(prefix + key, tensor) for key, tensor in module.named_buffers(recurse=False)))

    return node("", model)
