"""Where the models' own `from_pretrained` classmethods land: the one edge from models/ up into loading/.

`LlamaForCausalLM.from_pretrained(...)` and `LlamaConfig.from_pretrained(...)` are methods users call on
the model layer's classes, but resolving a repo id needs the Hub, which the model layer must not know.
Those two methods import this module lazily, and nothing else in models/ imports loading/.
"""
from __future__ import annotations

import os
from typing import Any, Union

from ..hub.resolve import HubOptions, resolve_pretrained

PathLike = Union[str, "os.PathLike[str]"]


def model_from_pretrained(cls: type, pretrained_model_name_or_path: Any, *model_args: Any, **kwargs: Any) -> Any:
    """`cls.from_pretrained(...)`: warpload's from_pretrained building `cls` itself."""
    from .pretrained import from_pretrained

    return from_pretrained(pretrained_model_name_or_path, *model_args, model_class=cls, **kwargs)


def config_from_pretrained(cls: type, pretrained_model_name_or_path: PathLike, *, subfolder: str = "",
                           return_unused_kwargs: bool = False, **kwargs: Any) -> Any:
    """`cls.from_pretrained(...)` for a config class: config.json of a folder, a JSON file or a Hub repo id
    (fetched with the Hub options in `kwargs`), with the other keywords as overrides; `(config, unused)` with
    `return_unused_kwargs`."""
    options = HubOptions.pop_from(kwargs)
    location = resolve_pretrained(os.fspath(pretrained_model_name_or_path), options, subfolder=subfolder,
                                  weights=False)
    config, unused = cls.from_local(location, subfolder=subfolder, overrides=kwargs)
    return (config, unused) if return_unused_kwargs else config


def generation_config_from_pretrained(cls: type, pretrained_model_name: PathLike, config_file_name: Any = None,
                                      **kwargs: Any) -> Any:
    """`GenerationConfig.from_pretrained(...)`: generation_config.json of a folder, a JSON file or a Hub repo id
    (fetched with the Hub options in `kwargs`), the other keywords applied as field overrides."""
    options = HubOptions.pop_from(kwargs)
    subfolder = kwargs.pop("subfolder", "")
    location = resolve_pretrained(os.fspath(pretrained_model_name), options, subfolder=subfolder, weights=False)
    return cls.from_local(location, config_file_name, subfolder=subfolder, **kwargs)
