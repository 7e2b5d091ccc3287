"""The Auto classes: AutoModelForCausalLM and AutoConfig, as transformers users call them."""
from __future__ import annotations

import os
from typing import Any, Optional, Union

from ..hub.remote_code import TrustCheck, fetch_remote_code
from ..hub.resolve import HubOptions, resolve_pretrained
from ..models.config import CONFIG_CLASSES, PretrainedConfig, config_for_model, config_of_folder

PathLike = Union[str, "os.PathLike[str]"]


class AutoModelForCausalLM:
    """Drop-in for transformers.AutoModelForCausalLM.from_pretrained, loading through warpload's engine."""

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: Optional[PathLike], *model_args: Any,
                        **kwargs: Any) -> Any:
        """The causal LM for the checkpoint's model_type, weights loaded (see warpload.loading.pretrained)."""
        from .pretrained import from_pretrained

        return from_pretrained(pretrained_model_name_or_path, *model_args, **kwargs)


class AutoConfig:
    """Picks the config class from `model_type`, like transformers.AutoConfig.

    Model types without a built-in class load as a plain PretrainedConfig that keeps every field;
    from_pretrained then hands them to the transformers backend.
    """

    @staticmethod
    def for_model(model_type: str, **kwargs: Any) -> PretrainedConfig:
        """A config of `model_type` with transformers' defaults and the given fields."""
        return config_for_model(model_type, **kwargs)

    @staticmethod
    def from_pretrained(pretrained_model_name_or_path: PathLike, *, subfolder: str = "",
                        return_unused_kwargs: bool = False, trust_remote_code: Optional[bool] = None,
                        **kwargs: Any) -> Any:
        """Reads config.json (see PretrainedConfig.from_pretrained).

        With trust_remote_code=True and an `auto_map` naming an AutoConfig class, returns that
        (transformers) config class's instance, its code fetched at `code_revision` like
        transformers.AutoConfig does (warpload.hub.remote_code; needs transformers). Raises ValueError
        when the file has no `model_type`, CheckpointNotFoundError without a config.json.
        """
        name = os.fspath(pretrained_model_name_or_path)
        options = HubOptions.pop_from(kwargs)
        trust = TrustCheck(name, trust_remote_code, ("AutoConfig",), builtin_model_types=CONFIG_CLASSES)
        location = resolve_pretrained(name, options, subfolder=subfolder, weights=False, check_config=trust)
        remote_code = fetch_remote_code(name, location, options, subfolder=subfolder,
                                        trust_remote_code=trust.trust_remote_code, auto_classes=("AutoConfig",))
        if remote_code.classes:
            from .transformers_backend import load_config

            config, unused = load_config(location, None, subfolder, kwargs, remote_code)
        else:
            config, unused = config_of_folder(location, subfolder=subfolder, shown_as=name, overrides=kwargs)
        return (config, unused) if return_unused_kwargs else config
