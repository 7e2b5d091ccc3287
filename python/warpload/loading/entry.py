"""Where the models' own `from_pretrained` classmethods land: the one edge from models/ up into loading/.

`LlamaForCausalLM.from_pretrained(...)`, `LlamaConfig.from_pretrained(...)` and `model.load_adapter(...)` are
methods users call on the model layer's classes, but resolving a repo id needs the Hub, which the model layer
must not know. Those methods import this module lazily, and nothing else in models/ imports loading/.
"""
from __future__ import annotations

import os
from typing import Any, Union

from ..errors import CheckpointNotFoundError
from ..hub.adapters import ADAPTER_CONFIG_NAME
from ..constants import GENERATION_CONFIG_NAME
from ..hub.resolve import HubOptions, resolve_files, resolve_pretrained

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


def load_adapter(model: Any, peft_model_id: str, adapter_name: str, options: dict[str, Any]) -> None:
    """model.load_adapter(...): the adapter folder (fetched for a repo id with `options`' Hub options), applied."""
    from .adapters import apply_adapter, find_adapter

    hub = HubOptions.pop_from(dict(options))
    adapter = find_adapter(os.fspath(peft_model_id), hub, subfolder=options.get("subfolder", ""))
    if adapter is None:
        raise CheckpointNotFoundError(f"{peft_model_id} has no {ADAPTER_CONFIG_NAME}: pass a PEFT adapter folder or "
                                      "repo id (peft's save_pretrained writes adapter_config.json)")
    apply_adapter(model, adapter.folder, adapter_name, adapter.config)


def model_save_pretrained(model: Any, save_directory: PathLike, **kwargs: Any) -> None:
    """`model.save_pretrained(...)` of a built-in model (see warpload.loading.saving.save_pretrained)."""
    from .saving import save_pretrained

    save_pretrained(model, save_directory, **kwargs)


def generation_config_from_pretrained(cls: type, pretrained_model_name: PathLike, config_file_name: Any = None,
                                      **kwargs: Any) -> Any:
    """`GenerationConfig.from_pretrained(...)`: generation_config.json of a folder, a JSON file or a Hub repo id
    (fetched with the Hub options in `kwargs`), the other keywords applied as field overrides."""
    options = HubOptions.pop_from(kwargs)
    subfolder = kwargs.pop("subfolder", "")
    # Only that file is fetched for a repo id (one listing, one download), not config.json or weights.
    folder = resolve_files(os.fspath(pretrained_model_name), options, (config_file_name or GENERATION_CONFIG_NAME,),
                           subfolder=subfolder)
    return cls.from_local(folder, config_file_name, **kwargs)
