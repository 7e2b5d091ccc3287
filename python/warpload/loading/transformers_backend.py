"""The transformers backend: transformers' own class for any architecture, built on meta, filled by the engine."""
from __future__ import annotations

import copy
import importlib.util
import os
from typing import Any, Callable, Optional

import torch
from torch import nn

from ..constants import GENERATION_CONFIG_NAME
from ..engine.fill import fill_parameters
from ..engine.mapped import AUTO
from ..hub.remote_code import RemoteClass, RemoteCode
from ..models.config import PretrainedConfig
from .load_state import Fill, LoadingInfo, Source, Spread, match_keys, place

INSTALL_HINT = "install it with `pip install transformers` (version 5 or newer)"


def is_available() -> bool:
    return importlib.util.find_spec("transformers") is not None


def load_config(location: Optional[str], config: Any, subfolder: str, kwargs: dict[str, Any],
                remote_code: RemoteCode) -> tuple[Any, dict[str, Any]]:
    """transformers' config and the keywords left for the model constructor, as transformers splits them.

    A warpload config is converted field by field; a transformers config is copied; otherwise
    config.json is read by the class remote_code fetched for `AutoConfig` (the code revision's),
    else by transformers.AutoConfig, with the keyword overrides. transformers raises its own
    ValueError for an `auto_map` without trust_remote_code=True.
    """
    import transformers

    if isinstance(config, transformers.PretrainedConfig):
        return copy.deepcopy(config), dict(kwargs)
    if isinstance(config, PretrainedConfig):
        return transformers.AutoConfig.for_model(**config.to_dict()), dict(kwargs)
    source, subfolder = (config, "") if config is not None else (location, subfolder)
    remote = remote_code.classes.get("AutoConfig")
    if config is None and remote is not None:
        # transformers.AutoConfig's remote-code branch, with the class from the code's own snapshot.
        config_class = remote_class(remote)
        config_class.register_for_auto_class()
        return config_class.from_pretrained(source, subfolder=subfolder, return_unused_kwargs=True, **kwargs)
    return transformers.AutoConfig.from_pretrained(source, subfolder=subfolder, return_unused_kwargs=True,
                                                   trust_remote_code=remote_code.trust_remote_code, **kwargs)


def build_on_meta(config: Any, dtype: torch.dtype, model_args: tuple, model_kwargs: dict[str, Any],
                  class_name: Optional[str], remote_code: RemoteCode) -> nn.Module:
    """transformers' class (by `class_name`, else the `AutoModelForCausalLM` class remote_code fetched,
    else its causal LM for the config) with every tensor on meta."""
    import transformers
    from transformers.models.auto.auto_factory import add_generation_mixin_to_remote_model

    remote = remote_code.classes.get("AutoModelForCausalLM")
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device("meta"):
            if class_name is not None:
                return getattr(transformers, class_name)(config, *model_args, **model_kwargs)
            if remote is not None:
                # AutoModelForCausalLM.from_config's remote-code branch, with the class from the code's snapshot.
                auto = transformers.AutoModelForCausalLM
                model_class = remote_class(remote)
                if type(config) not in auto._model_mapping:
                    auto.register(type(config), model_class, exist_ok=True)
                model_class.register_for_auto_class(auto_class=auto)
                return add_generation_mixin_to_remote_model(model_class)._from_config(config, dtype=dtype,
                                                                                      **model_kwargs)
            return transformers.AutoModelForCausalLM.from_config(config, *model_args, dtype=dtype,
                                                                 trust_remote_code=remote_code.trust_remote_code,
                                                                 **model_kwargs)
    finally:
        torch.set_default_dtype(previous)


def remote_class(remote: RemoteClass) -> type:
    """The class `remote` names, imported by transformers from its folder (copied into HF_MODULES_CACHE
    under a hash of the module and its relative imports, so two code revisions never share a module)."""
    from transformers.dynamic_module_utils import get_class_from_dynamic_module

    return get_class_from_dynamic_module(remote.reference, remote.folder)


def checkpoint_renamer(model: nn.Module) -> Callable[[str], str]:
    """transformers' own renames of legacy checkpoint names (LayerNorm.gamma -> .weight and the like).

    Raises NotImplementedError for architectures whose checkpoints need tensor conversions
    (fused experts, split projections): warpload places tensors as they are stored.
    """
    from transformers.conversion_mapping import get_model_conversion_mapping
    from transformers.core_model_loading import WeightConverter, WeightRenaming, rename_source_key

    mapping = get_model_conversion_mapping(model)
    renamings = [entry for entry in mapping if isinstance(entry, WeightRenaming)]
    converters = [entry for entry in mapping if isinstance(entry, WeightConverter)]

    def rename(name: str) -> str:
        key, pattern = rename_source_key(name, renamings, converters)
        if pattern is not None:
            raise NotImplementedError(
                f"{type(model).__name__} converts checkpoint tensor {name!r} on load ({pattern}); warpload does not "
                "reproduce transformers' tensor conversions yet: load it with transformers.AutoModelForCausalLM")
        return key

    return rename


def load(model: nn.Module, sources: dict[str, Source], dtype: torch.dtype, name: Optional[str],
         ignore_mismatched_sizes: bool, device: Any = "cpu", zero_copy: str = AUTO,
         fill: Fill = fill_parameters, spread: Optional[Spread] = None) -> LoadingInfo:
    """Fills a meta-built transformers model through the engine (zero_copy, fill and spread as for place),
    then lets transformers finish it."""
    shapes = {key: tuple(tensor.shape) for key, tensor in model.state_dict().items()}
    assignments, info = match_keys(sources, shapes, model.base_model_prefix, checkpoint_renamer(model))
    overrides = parameter_dtypes(model, dtype)
    for tensor in place(model, sources, assignments, (), dtype, device, zero_copy, fill, dtype_overrides=overrides,
                        spread=spread):
        # transformers initialises every tensor without this flag when it finalises the model.
        tensor._is_hf_initialized = True
    return _finalize(model, info, name, ignore_mismatched_sizes)


def parameter_dtypes(model: nn.Module, dtype: torch.dtype) -> dict[str, torch.dtype]:
    """The keys transformers 5.24 loads in another dtype than the model's (core_model_loading's dtype policy):
    those matching the class's `_keep_in_fp32_modules` (for float16) or `_keep_in_fp32_modules_strict` (for
    float16 and bfloat16) in float32, and floating tensors the class creates in a fixed dtype in theirs."""
    from transformers.core_model_loading import build_glob_alternation

    plan = model._get_dtype_plan(dtype)
    pattern, groups = (build_glob_alternation(list(plan))[:2]) if plan else (None, {})
    overrides = {}
    for key, tensor in model.state_dict(keep_vars=True).items():
        matched = pattern.search(key) if pattern is not None else None
        if matched is not None:
            overrides[key] = plan[groups[matched.lastgroup]]
        elif tensor.is_floating_point() and tensor.dtype != dtype:
            overrides[key] = tensor.dtype
    return overrides


def _finalize(model: nn.Module, info: LoadingInfo, name: Optional[str], ignore_mismatched_sizes: bool) -> LoadingInfo:
    """transformers' own last steps: missing weights and non-persistent buffers (rotary frequencies)
    materialised and initialised, tying, ignore lists, the load report; raises its RuntimeError for
    mismatched shapes unless ignore_mismatched_sizes."""
    from transformers.modeling_utils import LoadStateDictConfig
    from transformers.utils.loading_report import LoadStateDictInfo

    hf_info = LoadStateDictInfo(missing_keys=info.missing_keys, unexpected_keys=info.unexpected_keys,
                                mismatched_keys=info.mismatched_keys, error_msgs=info.error_msgs,
                                conversion_errors={}, skipped_pp_keys=set())
    load_config = LoadStateDictConfig(pretrained_model_name_or_path=name, device_map={"": "cpu"},
                                      ignore_mismatched_sizes=ignore_mismatched_sizes)
    hf_info = type(model)._finalize_model_loading(model, load_config, hf_info)
    return LoadingInfo(hf_info.missing_keys, hf_info.unexpected_keys, hf_info.mismatched_keys, hf_info.error_msgs)


def load_generation_config(model: nn.Module, folder: Optional[str]) -> None:
    """Replaces the model's derived generation config by the folder's generation_config.json, if any."""
    import transformers

    if folder is not None and os.path.isfile(os.path.join(folder, GENERATION_CONFIG_NAME)):
        model.generation_config = transformers.GenerationConfig.from_pretrained(folder)
