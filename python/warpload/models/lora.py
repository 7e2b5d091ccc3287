"""LoRA adapters on the built-in models, computed as peft computes them (peft/tuners/lora/layer.py), with its
module tree and state-dict names (`q_proj.base_layer`, `q_proj.lora_A.default`, `lm_head.modules_to_save.default`),
so a model adapted here has the keys, logits and merged weights of transformers' load_adapter. Plain torch: the
adapter's tensors come from loading/adapters.py."""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any, Optional

import torch
from torch import nn


@dataclass(frozen=True)
class LoraSettings:
    """The adapter_config.json fields that change the computation (peft's LoraConfig)."""

    lora_alpha: float
    use_rslora: bool = False
    alpha_pattern: Optional[dict[str, float]] = None
    # GPT-2's Conv1D stores its weight (in, out): merging transposes the update (peft's fan_in_fan_out).
    fan_in_fan_out: bool = False

    def scaling(self, module_name: str, rank: int) -> float:
        """peft's scaling: alpha / r, or alpha / sqrt(r) with rsLoRA; alpha from alpha_pattern when a pattern
        matches the module name (peft's get_pattern_key: the pattern ends the name, after a dot)."""
        alpha = self.lora_alpha
        for pattern, value in (self.alpha_pattern or {}).items():
            if _pattern_matches(pattern, module_name):
                alpha = value
                break
        return alpha / math.sqrt(rank) if self.use_rslora else alpha / rank


def _pattern_matches(pattern: str, name: str) -> bool:
    import re

    return re.match(rf"(.*\.)?({pattern})$", name) is not None


class LoraLinear(nn.Module):
    """A Linear (or GPT-2 Conv1D) with low-rank adapters beside it: base(x) + B(A(x)) * scaling for the active one."""

    def __init__(self, base_layer: nn.Module) -> None:
        super().__init__()
        self.base_layer = base_layer
        self.lora_A = nn.ModuleDict()
        self.lora_B = nn.ModuleDict()
        self.scaling: dict[str, float] = {}
        self.active_adapter: Optional[str] = None
        self.disabled = False

    def add_adapter(self, name: str, lora_a: torch.Tensor, lora_b: torch.Tensor, scaling: float) -> None:
        """Adds adapter `name` (A: rank x in, B: out x rank) and makes it the active one."""
        rank, fan_in = lora_a.shape
        fan_out = lora_b.shape[0]
        a_layer = nn.Linear(fan_in, rank, bias=False, device="meta")
        b_layer = nn.Linear(rank, fan_out, bias=False, device="meta")
        a_layer.weight = nn.Parameter(lora_a, requires_grad=False)
        b_layer.weight = nn.Parameter(lora_b, requires_grad=False)
        self.lora_A[name] = a_layer
        self.lora_B[name] = b_layer
        self.scaling[name] = scaling
        self.active_adapter = name

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        result = self.base_layer(x, *args, **kwargs)
        name = self.active_adapter
        if self.disabled or name is None or name not in self.lora_A:
            return result
        result_dtype = result.dtype
        lora_a, lora_b = self.lora_A[name], self.lora_B[name]
        x = x.to(lora_a.weight.dtype)
        # The order of peft's vanilla LoRA: the same roundings, the same logits.
        return (result + lora_b(lora_a(x)) * self.scaling[name]).to(result_dtype)

    def delta_weight(self, name: str, fan_in_fan_out: bool) -> torch.Tensor:
        """B @ A * scaling in the base weight's layout and dtype (peft's get_delta_weight: on the CPU, half
        precision adapters multiply in float32)."""
        weight_a = self.lora_A[name].weight
        weight_b = self.lora_B[name].weight
        dtype = weight_b.dtype
        if weight_b.device.type == "cpu" and dtype in (torch.float16, torch.bfloat16):
            weight_a, weight_b = weight_a.float(), weight_b.float()
        product = weight_b @ weight_a
        delta = (product.T if fan_in_fan_out else product) * self.scaling[name]
        return delta.to(dtype)


class ModulesToSave(nn.Module):
    """A module the adapter trained in full (peft's ModulesToSaveWrapper): its copy serves the active adapter."""

    def __init__(self, original_module: nn.Module) -> None:
        super().__init__()
        self.original_module = original_module
        self.modules_to_save = nn.ModuleDict()
        self.active_adapter: Optional[str] = None
        self.disabled = False

    def add_adapter(self, name: str, tensors: dict[str, torch.Tensor]) -> None:
        """Adds a copy of the original module holding `tensors` (its parameter names -> values)."""
        replica = copy.deepcopy(self.original_module)
        for key, tensor in tensors.items():
            parent_name, _, leaf = key.rpartition(".")
            parent = replica.get_submodule(parent_name) if parent_name else replica
            setattr(parent, leaf, nn.Parameter(tensor, requires_grad=False))
        self.modules_to_save[name] = replica
        self.active_adapter = name

    @property
    def weight(self) -> torch.Tensor:
        """The serving module's weight (generate and tying read lm_head.weight)."""
        return self._serving().weight

    def _serving(self) -> nn.Module:
        name = self.active_adapter
        if self.disabled or name is None or name not in self.modules_to_save:
            return self.original_module
        return self.modules_to_save[name]

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self._serving()(*args, **kwargs)


def adapter_layers(model: nn.Module) -> list[nn.Module]:
    """The model's LoraLinear and ModulesToSave modules."""
    return [module for module in model.modules() if isinstance(module, (LoraLinear, ModulesToSave))]


def wrap(model: nn.Module, module_name: str, wrapper: type) -> nn.Module:
    """The `wrapper` around model.<module_name>, put in its place the first time."""
    module = model.get_submodule(module_name)
    if isinstance(module, wrapper):
        return module
    parent_name, _, leaf = module_name.rpartition(".")
    wrapped = wrapper(module)
    setattr(model.get_submodule(parent_name) if parent_name else model, leaf, wrapped)
    return wrapped


def merge_and_unload(model: nn.Module, fan_in_fan_out: dict[str, bool]) -> nn.Module:
    """Folds each active adapter into its base weights and puts the base modules back (peft's merge_and_unload):
    W += B @ A * scaling, in the base weight's dtype; a trained module copy replaces its original."""
    for name, module in list(model.named_modules()):
        if isinstance(module, LoraLinear):
            replacement = module.base_layer
            active = module.active_adapter
            if active is not None and not module.disabled:
                with torch.no_grad():
                    replacement.weight.data = replacement.weight.data + module.delta_weight(
                        active, fan_in_fan_out.get(active, False))
        elif isinstance(module, ModulesToSave):
            replacement = module._serving()
        else:
            continue
        parent_name, _, leaf = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, leaf, replacement)
    return model


class AdapterMixin:
    """transformers' adapter methods (PeftAdapterMixin) on the built-in models, and peft's merge_and_unload."""

    peft_config: dict[str, dict[str, Any]]
    adapter_settings: dict[str, LoraSettings]

    def load_adapter(self, peft_model_id: str, adapter_name: Optional[str] = None, *, revision: Optional[str] = None,
                     token: Any = None, adapter_kwargs: Optional[dict[str, Any]] = None, **kwargs: Any) -> None:
        """Adds the LoRA adapter of a folder or Hub repo under `adapter_name` ("default") and activates it; Hub
        options (revision, token, cache_dir, local_files_only, ...) as from_pretrained takes them."""
        # The one import from models/ up into loading/ (see pyproject's import contracts).
        from ..loading.entry import load_adapter

        name = adapter_name or "default"
        if name in getattr(self, "peft_config", {}):
            raise ValueError(f"Adapter with name {name} already exists. Please use a different name.")
        options = {**(adapter_kwargs or {}), **kwargs, "revision": revision, "token": token}
        load_adapter(self, peft_model_id, name, {key: value for key, value in options.items() if value is not None})

    def active_adapters(self) -> list[str]:
        """The active adapter's name in a list (transformers' form), empty when none is active or all are off."""
        names = {layer.active_adapter for layer in adapter_layers(self) if not layer.disabled}
        return sorted(name for name in names if name is not None)

    def set_adapter(self, adapter_name: str) -> None:
        """Makes `adapter_name` the active adapter of every adapted layer."""
        if adapter_name not in getattr(self, "peft_config", {}):
            raise ValueError(f"Adapter with name {adapter_name} not found. Please pass the correct adapter name "
                             f"among {list(getattr(self, 'peft_config', {}))}")
        for layer in adapter_layers(self):
            layer.active_adapter = adapter_name

    def _switch_adapters(self, enabled: bool) -> None:
        layers = adapter_layers(self)
        if not layers:
            raise ValueError("No adapter loaded. Please load an adapter first.")
        for layer in layers:
            layer.disabled = not enabled

    def disable_adapters(self) -> None:
        """Computes with the base weights alone until enable_adapters()."""
        self._switch_adapters(False)

    def enable_adapters(self) -> None:
        """Turns the active adapter back on."""
        self._switch_adapters(True)

    def merge_and_unload(self) -> "nn.Module":
        """Folds the active adapter into the base weights, removes the adapter layers, returns the model."""
        if not adapter_layers(self):
            raise ValueError("No adapter loaded. Please load an adapter first.")
        settings = getattr(self, "adapter_settings", {})
        merge_and_unload(self, {name: setting.fan_in_fan_out for name, setting in settings.items()})
        self.peft_config, self.adapter_settings = {}, {}
        return self
