"""The device_map="auto" planner, a pure function: a module tree with byte sizes and device budgets -> placement.

It reproduces transformers 5's `_get_device_map` (integrations/accelerate.py: get_balanced_memory, then
infer_auto_device_map, then accelerate's clean_device_map) step for step, so the same sizes and budgets give the
same map; no torch is needed to call it (loading/module_tree.py builds the tree from a meta model)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Union

from ..errors import DeviceMapError

Device = Union[int, str]
STRATEGIES = ("auto", "balanced", "balanced_low_0", "sequential")
# transformers' get_max_memory keeps 90% of the free RAM when the caller sets no max_memory, so that conversion
# spikes do not push the process out of memory; a lone GPU keeps 10% for activations the same way.
UNSET_BUDGET_FRACTION = 0.90


@dataclass(frozen=True)
class ModuleNode:
    """One module (class_name set) or tensor (class_name None) of a model: its dotted name, its size in bytes as
    transformers counts it (parameters in the target dtype plus buffers, tied copies once), its direct parameters,
    child modules and direct buffers in torch's order."""

    name: str
    size: int
    class_name: Optional[str] = None
    parameters: tuple["ModuleNode", ...] = ()
    children: tuple["ModuleNode", ...] = ()
    buffers: tuple["ModuleNode", ...] = ()

    @property
    def is_module(self) -> bool:
        return self.class_name is not None

    def walk(self) -> "list[ModuleNode]":
        """This node and every module and tensor under it."""
        nodes = [self]
        for child in self.parameters + self.children + self.buffers:
            nodes.extend(child.walk())
        return nodes


def parse_size(size: Union[int, float, str]) -> int:
    """Bytes of a max_memory value: an int, or a string with a unit ("20GiB", "5GB", "500MB", "1Gb" in bits), as
    accelerate's convert_file_size_to_int reads it. Raises DeviceMapError (a ValueError) for anything else."""
    message = (f"`size` {size} is not in a valid format. Use an integer for bytes, or a string with an unit "
               "(like '5.0GB').")
    if isinstance(size, (int, float)) and not isinstance(size, bool):
        if size < 0:
            raise DeviceMapError(message)
        return size
    if not isinstance(size, str):
        raise DeviceMapError(message)
    units = (("GIB", 2 ** 30, False), ("MIB", 2 ** 20, False), ("KIB", 2 ** 10, False),
             ("GB", 10 ** 9, True), ("MB", 10 ** 6, True), ("KB", 10 ** 3, True))
    for unit, factor, decimal in units:
        if size.upper().endswith(unit):
            try:
                value = int(float(size[:-len(unit)]) * factor)
            except ValueError as err:
                raise DeviceMapError(message) from err
            value = value // 8 if decimal and size.endswith("b") else value
            if value < 0:
                raise DeviceMapError(message)
            return value
    raise DeviceMapError(message)


def order_budgets(max_memory: dict) -> dict[Device, int]:
    """max_memory in bytes, GPUs first by index, then "mps", "cpu", "disk" (accelerate's order). Raises
    DeviceMapError for a key that is none of these, worded as accelerate's get_max_memory."""
    budgets = {key: parse_size(value) for key, value in max_memory.items()}
    gpus = sorted(key for key in budgets if isinstance(key, int) and not isinstance(key, bool))
    ordered = gpus + [key for key in ("mps", "cpu", "disk") if key in budgets]
    for key in budgets:
        if key not in ordered:
            raise DeviceMapError(f"Device {key} is not recognized, available devices are integers(for GPU/XPU), "
                                 "'mps', 'cpu' and 'disk'")
    return {key: budgets[key] for key in ordered}


def plan_device_map(root: ModuleNode, strategy: str, budgets: dict[Device, int], no_split: frozenset[str],
                    tied_groups: list[list[str]], user_set_budgets: bool = True) -> dict[str, Device]:
    """transformers' `_get_device_map(model, strategy, max_memory)`: balanced budgets unless "sequential", then the
    greedy placement, cleaned. `budgets` come from order_budgets (or the machine's, user_set_budgets False)."""
    if strategy not in STRATEGIES:
        raise DeviceMapError(f"device_map={strategy!r}: choose one of {', '.join(STRATEGIES)}, a device, or a dict")
    if strategy != "sequential":
        budgets = balanced_budgets(root, budgets, no_split, low_zero=strategy == "balanced_low_0",
                                   user_set_budgets=user_set_budgets)
    return clean_device_map(infer_device_map(root, budgets, no_split, tied_groups))


def balanced_budgets(root: ModuleNode, budgets: dict[Device, int], no_split: frozenset[str], *, low_zero: bool,
                     user_set_budgets: bool) -> dict[Device, int]:
    """transformers' get_balanced_memory: each GPU but the last gets an equal share of the model plus room for
    1.25 times its largest unsplittable block or leaf module (balanced_low_0: GPU 0 gets only what the others
    cannot hold)."""
    budgets = dict(budgets)
    gpus_given = [device for device in budgets if device not in ("cpu", "disk")]
    num_devices = len([device for device in gpus_given if budgets[device] > 0])
    if num_devices == 0:
        return budgets
    if num_devices == 1:
        low_zero = False
        if not user_set_budgets:
            first = next((device for device in budgets if isinstance(device, int)), None)
            if first is not None:
                budgets[first] *= UNSET_BUDGET_FRACTION
    nodes = root.walk()
    per_gpu = root.size // (num_devices - 1 if low_zero else num_devices)
    blocks = [node.size for node in nodes if node.class_name in no_split]
    leaves: dict[str, int] = {}
    for node in nodes:
        if not node.is_module and "." in node.name:
            parent = node.name.rsplit(".", 1)[0]
            leaves[parent] = leaves.get(parent, 0) + node.size
    per_gpu += int(1.25 * max(max(blocks, default=0), max(leaves.values(), default=0)))
    gpus = sorted(device for device, memory in budgets.items() if isinstance(device, int) and memory > 0)
    for index in gpus[:-1]:
        budgets[index] = min(budgets[0] if low_zero and index == 0 else per_gpu, budgets[index])
    if low_zero:
        min_zero = max(0, root.size - sum(budgets[index] for index in range(1, num_devices)))
        budgets[0] = min(min_zero, budgets[0])
    return budgets


def largest_layer(nodes: list[ModuleNode], no_split: frozenset[str]) -> tuple[int, list[str]]:
    """accelerate's get_max_layer_size: the size of the largest layer (a module without children, or one that
    must not be split) among nodes, and the names of the layers of that size."""
    largest, names = 0, []
    pending = list(nodes)
    while pending:
        node = pending.pop(0)
        if not node.children or node.class_name in no_split:
            if node.size > largest:
                largest, names = node.size, [node.name]
            elif node.size == largest:
                names.append(node.name)
        else:
            pending = list(node.children) + pending
    return largest, names


def _tied_outside(name: str, tied_groups: list[list[str]]) -> list[str]:
    """The tied parameters of groups that have members both inside and outside `name`: those outside it."""
    inside = [group for group in tied_groups
              if any(name + "." in key + "." for key in group) and not all(name + "." in key + "." for key in group)]
    return [key for group in inside for key in group if name + "." not in key + "."]


def _with_ties(tied: list[str], node: ModuleNode, pending: list[ModuleNode]) -> tuple[int, list[ModuleNode]]:
    """Its size with the pending modules holding parameters tied to it, and those modules (accelerate's
    get_module_size_with_ties)."""
    size, modules = node.size, []
    for key in tied:
        holder = [candidate for candidate in pending if key.startswith(candidate.name + ".")][0]
        if holder not in modules:
            modules.append(holder)
            size += holder.size
    return size, modules


def infer_device_map(root: ModuleNode, budgets: dict[Device, int], no_split: frozenset[str],
                     tied_groups: list[list[str]]) -> dict[str, Device]:
    """transformers' infer_auto_device_map (uncleaned): modules in order fill the GPUs, then the CPU, then the disk;
    a module that does not fit is split into its children unless it must not be, and the first GPU and the CPU
    keep room for the largest layer that may be brought onto them. Tied parameters go where their module goes."""
    devices = list(budgets) + ([] if "disk" in budgets else ["disk"])
    gpus = [device for device in devices if device not in ("cpu", "disk")]
    main_devices = ["mps"] if "mps" in gpus else [gpus[0], "cpu"] if gpus else ["cpu"]
    device_map: dict[str, Device] = {}
    current = 0
    used = dict.fromkeys(devices, 0)
    pending = list(root.parameters + root.children + root.buffers)
    max_layer, max_names = largest_layer([node for node in pending if node.is_module], no_split)
    while pending:
        node = pending.pop(0)
        name = node.name
        max_names = [n for n in max_names if n != name and not n.startswith(name + ".")]
        if not max_names:
            max_layer, max_names = largest_layer([n for n in pending if n.is_module], no_split)
        tied = _tied_outside(name, tied_groups)
        device = devices[current]
        limit = budgets[device] if device != "disk" else None
        reserved = 0
        if device in main_devices:
            limit, reserved = limit - max_layer, max_layer
        size_with_ties, tied_modules = _with_ties(tied, node, pending)
        if limit is None or used[device] + size_with_ties <= limit:
            used[device] += size_with_ties
            device_map[name] = device
            for module in tied_modules:
                if module in pending:
                    pending.remove(module)
                device_map[module.name] = device
            continue
        if tied and used[device] + node.size <= limit:
            split = next((module for module in tied_modules if module.children and module.class_name not in no_split),
                         None)
            if split is not None:
                index = pending.index(split)
                pending = [node] + pending[:index] + list(split.parameters + split.children) + pending[index + 1:]
                max_layer, max_names = largest_layer([n for n in pending if n.is_module], no_split)
                continue
        if node.children and node.class_name not in no_split:
            pending = list(node.parameters + node.children) + pending
            max_layer, max_names = largest_layer([n for n in pending if n.is_module], no_split)
            continue
        used[device] += reserved
        current += 1
        pending.insert(0, node)
    return device_map


def clean_device_map(device_map: dict[str, Device], module_name: str = "") -> dict[str, Device]:
    """accelerate's clean_device_map: a module whose entries all name one device becomes one entry, recursively."""
    prefix = "" if module_name == "" else f"{module_name}."
    values = [value for key, value in device_map.items() if key.startswith(prefix)]
    if len(set(values)) == 1 and len(values) > 1:
        for key in [key for key in device_map if key.startswith(prefix)]:
            del device_map[key]
        device_map[module_name] = values[0]
    children = [key for key in device_map if key.startswith(prefix) and len(key) > len(module_name)]
    depth = len(module_name.split(".")) + 1 if module_name else 1
    for child in {".".join(key.split(".")[:depth]) for key in children}:
        clean_device_map(device_map, module_name=child)
    return device_map
