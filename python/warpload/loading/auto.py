"""The Auto classes: AutoModelForCausalLM and AutoConfig, as transformers users call them."""
from __future__ import annotations

import os
from typing import Any, Optional, Union

from ..hub.remote_code import TrustCheck, fetch_remote_code
from ..hub.resolve import HubOptions, resolve_pretrained
from ..models.config import CONFIG_CLASSES, PretrainedConfig, config_for_model, config_of_folder
from ..models.modeling import PreTrainedModel
from ..models.registry import CAUSAL_LM_CLASSES

PathLike = Union[str, "os.PathLike[str]"]


class AutoModelForCausalLM:
    """Drop-in for transformers.AutoModelForCausalLM.from_pretrained, loading through warpload's engine."""

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: Optional[PathLike], *model_args: Any,
                        **kwargs: Any) -> Any:
        """The causal LM for the checkpoint's model_type, weights loaded (see warpload.loading.pretrained)."""
        from .pretrained import from_pretrained

        return from_pretrained(pretrained_model_name_or_path, *model_args, **kwargs)

    @classmethod
    def from_config(cls, config: Any, *model_args: Any, dtype: Any = None, torch_dtype: Any = None,
                    **kwargs: Any) -> Any:
        """A randomly initialised causal LM for `config`, as transformers' from_config (see
        warpload.loading.from_config.model_from_config)."""
        from .from_config import model_from_config

        return model_from_config(config, *model_args, dtype=dtype if dtype is not None else torch_dtype, **kwargs)

    @staticmethod
    def register(config_class: type, model_class: type, exist_ok: bool = False) -> None:
        """Makes from_pretrained and from_config build `model_class` (a warpload PreTrainedModel subclass whose
        config_class is `config_class`) for configs of `config_class.model_type`, as transformers' register.
        Registers the config class with AutoConfig too. Raises ValueError for a model_type already taken (unless
        exist_ok) or a model_class built for another config class, TypeError for classes warpload cannot build."""
        if not (isinstance(config_class, type) and issubclass(config_class, PretrainedConfig)):
            raise TypeError(f"{config_class!r} is not a warpload PretrainedConfig subclass; subclass "
                            "warpload.models.config.PretrainedConfig (set model_type and defaults)")
        if not (isinstance(model_class, type) and issubclass(model_class, PreTrainedModel)):
            raise TypeError(f"{model_class!r} is not a warpload PreTrainedModel subclass; transformers' own classes "
                            "register with transformers.AutoModelForCausalLM.register, and warpload loads them with "
                            "backend='transformers'")
        if model_class.config_class is not config_class:
            raise ValueError(f"The model class you are passing has a `config_class` attribute that is not consistent "
                             f"with the config class you passed (model has {model_class.config_class} and you passed "
                             f"{config_class}). Fix one of those so they match!")
        model_type = config_class.model_type
        if not model_type:
            raise ValueError(f"{config_class.__name__} has no model_type: set the class attribute model_type")
        if model_type in CAUSAL_LM_CLASSES and not exist_ok:
            taken = CAUSAL_LM_CLASSES[model_type].__name__
            raise ValueError(f"'{model_type}' is already used by a model class ({taken}); pass exist_ok=True to "
                             "replace it")
        AutoConfig.register(model_type, config_class, exist_ok=True)
        CAUSAL_LM_CLASSES[model_type] = model_class


class AutoConfig:
    """Picks the config class from `model_type`, like transformers.AutoConfig.

    Model types without a built-in class load as a plain PretrainedConfig that keeps every field;
    from_pretrained then hands them to the transformers backend.
    """

    @staticmethod
    def register(model_type: str, config: type, exist_ok: bool = False) -> None:
        """Makes AutoConfig (and from_pretrained) read config.json files of `model_type` into `config`, a warpload
        PretrainedConfig subclass. Raises ValueError when the type is taken (unless exist_ok) or the class's own
        model_type differs."""
        if not (isinstance(config, type) and issubclass(config, PretrainedConfig)):
            raise TypeError(f"{config!r} is not a warpload PretrainedConfig subclass")
        if config.model_type != model_type:
            raise ValueError(f"The config you are passing has a `model_type` attribute that is not consistent with "
                             f"the model type you passed (config has {config.model_type} and you passed {model_type}. "
                             "Fix one of those so they match!")
        if model_type in CONFIG_CLASSES and CONFIG_CLASSES[model_type] is not config and not exist_ok:
            raise ValueError(f"'{model_type}' is already used by a config class; pass exist_ok=True to replace it")
        CONFIG_CLASSES[model_type] = config

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
