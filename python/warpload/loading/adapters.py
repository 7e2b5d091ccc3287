"""PEFT LoRA adapters: an adapter folder or repo given to from_pretrained loads its base model and applies it,
and `model.load_adapter` adds more; the adapter's tensors are read by the engine, the layers are models/lora.py's."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional

from .._fileio import read_json_object
from ..errors import CheckpointNotFoundError, UnsupportedFormatError
from ..hub.adapters import ADAPTER_CONFIG_NAME, ADAPTER_WEIGHTS_NAMES, adapter_folder
from ..hub.resolve import HubOptions
from ..models.lora import LoraLinear, LoraSettings, ModulesToSave, wrap

if TYPE_CHECKING:
    import torch
    from torch import nn

# peft prefixes every key of a causal-LM adapter with the PeftModel's path to the base model.
_PEFT_PREFIX = "base_model.model."
# adapter_config.json settings that change what the adapter computes, with the value that means "off".
_UNSUPPORTED_SETTINGS = {"use_dora": False, "lora_bias": False, "bias": "none", "layer_replication": None,
                         "target_parameters": None, "trainable_token_indices": None, "use_qalora": False,
                         "use_bdlora": None, "alora_invocation_tokens": None}


@dataclass(frozen=True)
class Adapter:
    """An adapter found for a from_pretrained call: its local folder and its adapter_config.json."""

    folder: str
    config: dict[str, Any]

    @property
    def base_model(self) -> str:
        base = self.config.get("base_model_name_or_path")
        if not base:
            raise ValueError(f"{os.path.join(self.folder, ADAPTER_CONFIG_NAME)} names no base_model_name_or_path: "
                             "load the base model, then call model.load_adapter(<this folder>)")
        return base


def find_adapter(location: Optional[str], hub: HubOptions, subfolder: str = "") -> Optional[Adapter]:
    """The adapter at `location` (a folder with adapter_config.json, or a repo id whose listing has one and no
    config.json), else None."""
    folder = None if location is None else adapter_folder(location, hub, subfolder=subfolder)
    return None if folder is None else Adapter(folder, read_adapter_config(folder))


def read_adapter_config(folder: str) -> dict[str, Any]:
    """adapter_config.json, checked: a LoRA adapter without the variants warpload does not compute."""
    path = os.path.join(folder, ADAPTER_CONFIG_NAME)
    config = read_json_object(path)
    if config.get("peft_type", "LORA") != "LORA":
        raise UnsupportedFormatError(f"{path}: peft_type {config.get('peft_type')!r} adapters are not supported by "
                                     "warpload (LoRA only); load them with peft.PeftModel.from_pretrained", path=path)
    for key, off in _UNSUPPORTED_SETTINGS.items():
        if config.get(key) not in (off, None, [], {}):
            raise UnsupportedFormatError(f"{path}: {key}={config[key]!r} is not supported by warpload's LoRA layers; "
                                         "load this adapter with peft.PeftModel.from_pretrained", path=path)
    return config


def _adapter_tensors(folder: str) -> dict[str, "torch.Tensor"]:
    from ..tensors import load_checkpoint

    for name in ADAPTER_WEIGHTS_NAMES:
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            return load_checkpoint(path)
    raise CheckpointNotFoundError(f"{folder} has {ADAPTER_CONFIG_NAME} but no {' or '.join(ADAPTER_WEIGHTS_NAMES)}")


def apply_adapter(model: "nn.Module", folder: str, adapter_name: str, config: Optional[dict[str, Any]] = None) -> None:
    """Adds the LoRA adapter of `folder` to `model` under `adapter_name` and makes it active: a LoraLinear around
    each module the adapter has lora_A/lora_B for, a ModulesToSave around each module it saved in full."""
    config = read_adapter_config(folder) if config is None else config
    settings = LoraSettings(lora_alpha=float(config.get("lora_alpha", 8)), use_rslora=bool(config.get("use_rslora")),
                            alpha_pattern=config.get("alpha_pattern") or None,
                            fan_in_fan_out=bool(config.get("fan_in_fan_out")))
    dtype = next(model.parameters()).dtype
    lora: dict[str, dict[str, "torch.Tensor"]] = {}
    saved: dict[str, dict[str, "torch.Tensor"]] = {}
    targets = tuple(config.get("modules_to_save") or ())
    for key, tensor in _adapter_tensors(folder).items():
        name = key.removeprefix(_PEFT_PREFIX)
        module_name, _, part = name.rpartition(".lora_")
        if part in ("A.weight", "B.weight"):
            lora.setdefault(module_name, {})[part[0]] = tensor.to(dtype)
            continue
        owner = next((t for t in targets if name == t or name.startswith(t + ".") or f".{t}." in f".{name}"), None)
        if owner is None:
            raise UnsupportedFormatError(f"{folder}: adapter tensor {key!r} is neither a LoRA matrix nor part of a "
                                         "module in modules_to_save; load it with peft", path=folder, tensor=key)
        module_name = name[:name.index(owner) + len(owner)]
        saved.setdefault(module_name, {})[name[len(module_name) + 1:]] = tensor.to(dtype)
    _check_modules(model, folder, lora, saved)
    for module_name, pair in lora.items():
        layer = wrap(model, module_name, LoraLinear)
        layer.add_adapter(adapter_name, pair["A"], pair["B"], settings.scaling(module_name, pair["A"].shape[0]))
    for module_name, tensors in saved.items():
        wrap(model, module_name, ModulesToSave).add_adapter(adapter_name, tensors)
    model.adapter_settings = {**getattr(model, "adapter_settings", {}), adapter_name: settings}
    model.peft_config = {**getattr(model, "peft_config", {}), adapter_name: config}


def _check_modules(model: "nn.Module", folder: str, lora: dict, saved: dict) -> None:
    """Every adapted module exists, LoRA pairs are complete and fit the layer: checked before anything changes."""
    modules = dict(model.named_modules())
    for module_name, pair in lora.items():
        module = modules.get(module_name)
        base = module.base_layer if isinstance(module, LoraLinear) else module
        if base is None or not hasattr(base, "weight") or base.weight.dim() != 2 or set(pair) != {"A", "B"}:
            raise UnsupportedFormatError(f"{folder}: the adapter changes {module_name!r}, which is not a linear layer "
                                         f"of {type(model).__name__} (or lacks lora_A / lora_B)", path=folder,
                                         tensor=module_name)
    for module_name in saved:
        if module_name not in modules:
            raise UnsupportedFormatError(f"{folder}: modules_to_save names {module_name!r}, which "
                                         f"{type(model).__name__} does not have", path=folder, tensor=module_name)
