"""save_pretrained of a FastTokenizer: the files transformers 5's TokenizersBackend.save_pretrained writes, with
the same content, each written atomically (tokenizer_config.json, chat_template.jinja, additional_chat_templates/,
tokenizer.json)."""
from __future__ import annotations

import copy
import json
import os
from typing import Any, Optional

from .._fileio import write_atomically
from ..constants import CHAT_TEMPLATE_NAME, CHAT_TEMPLATES_DIR, TOKENIZER_CONFIG_NAME, TOKENIZER_NAME

# Config keys transformers never saves: paths of this machine and load-time bookkeeping.
PRIVATE_KEYS = ("name_or_path", "special_tokens_map_file", "tokenizer_file", "vocab_file", "device_map",
                "slow_tokenizer_class", "files_loaded", "added_tokens_decoder", "additional_special_tokens",
                "add_bos_token", "add_eos_token")


def save_tokenizer(tokenizer: Any, save_directory: Any, *, filename_prefix: Optional[str] = None,
                   save_jinja_files: bool = True) -> tuple[str, ...]:
    """Writes the tokenizer's files into save_directory (created if missing); returns their paths.

    Raises NotADirectoryError when save_directory is a file, ValueError for a chat template name that would
    leave additional_chat_templates/."""
    save_directory = os.fspath(save_directory)
    if os.path.isfile(save_directory):
        raise NotADirectoryError(f"{save_directory} is a file: pass the folder to save the tokenizer into")
    os.makedirs(save_directory, exist_ok=True)
    prefix = f"{filename_prefix}-" if filename_prefix else ""
    config = tokenizer_config(tokenizer)
    written = _save_chat_templates(tokenizer.chat_template, config, save_directory, prefix, save_jinja_files)
    config_path = os.path.join(save_directory, prefix + TOKENIZER_CONFIG_NAME)
    text = json.dumps(config, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    write_atomically(config_path, lambda path: _write_text(path, text))
    tokenizer_path = os.path.join(save_directory, prefix + TOKENIZER_NAME)
    write_atomically(tokenizer_path, tokenizer.backend_tokenizer.save)
    return (config_path, *written, tokenizer_path)


def tokenizer_config(tokenizer: Any) -> dict[str, Any]:
    """The tokenizer_config.json transformers writes: the init keywords with current values, the special tokens,
    serialized added tokens, and the tokenizer_class transformers would build."""
    config = copy.deepcopy(tokenizer.init_kwargs)
    keys = set(config) | {"model_max_length"}
    for key in keys - {"add_bos_token", "add_eos_token"}:
        if hasattr(tokenizer, key):
            config[key] = getattr(tokenizer, key)
    config.update(tokenizer.special_tokens_map)
    if tokenizer.extra_special_tokens:
        config["extra_special_tokens"] = tokenizer.extra_special_tokens
    config.pop("chat_template", None)
    config = serialized_tokens(config)
    for key in PRIVATE_KEYS:
        config.pop(key, None)
    config["tokenizer_class"] = tokenizer.class_name
    return config


def serialized_tokens(value: Any) -> Any:
    """tokenizers.AddedToken values as {"__type": "AddedToken", ...} dicts, recursively."""
    from tokenizers import AddedToken

    if isinstance(value, AddedToken):
        return {**value.__getstate__(), "__type": "AddedToken"}
    if isinstance(value, (list, tuple)):
        return [serialized_tokens(item) for item in value]
    if isinstance(value, dict):
        return {key: serialized_tokens(item) for key, item in value.items()}
    return value


def _save_chat_templates(template: Any, config: dict[str, Any], folder: str, prefix: str,
                         save_jinja_files: bool) -> list[str]:
    """chat_template.jinja (and additional_chat_templates/NAME.jinja for named ones); legacy: into the config."""
    if template is None:
        return []
    if not save_jinja_files:
        config["chat_template"] = template if isinstance(template, str) else [
            {"name": name, "template": text} for name, text in template.items()]
        return []
    templates = {"default": template} if isinstance(template, str) else dict(template)
    written = []
    named_folder = os.path.join(folder, prefix + CHAT_TEMPLATES_DIR)
    for name, text in templates.items():
        if name == "default":
            path = os.path.join(folder, prefix + CHAT_TEMPLATE_NAME)
        else:
            os.makedirs(named_folder, exist_ok=True)
            path = os.path.join(named_folder, f"{name}.jinja")
            if os.path.dirname(os.path.realpath(path)) != os.path.realpath(named_folder):
                raise ValueError(f"Invalid chat template name: {name!r}")
        write_atomically(path, lambda temporary, text=text: _write_text(temporary, text))
        written.append(path)
    return written


def _write_text(path: str, text: str) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text)
