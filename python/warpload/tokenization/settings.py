"""A tokenizer folder's files read into the keyword arguments transformers 5 builds its tokenizer from.

Mirrors PreTrainedTokenizerBase._from_pretrained (transformers 5.24): tokenizer_config.json is the
base; with a tokenizer.json its add_bos_token / add_eos_token are dropped (the file's post-processor
decides); chat_template.jinja and additional_chat_templates/*.jinja win over the config's template; the legacy
special_tokens_map.json, added_tokens.json and tokenizer.json's added tokens fill in when the config
has no added_tokens_decoder. Only JSON and text are read: nothing is unpickled or executed.
"""
from __future__ import annotations

import os
from typing import Any, Optional

from ..constants import (
    ADDED_TOKENS_NAME,
    CHAT_TEMPLATE_NAME,
    CHAT_TEMPLATES_DIR,
    SPECIAL_TOKENS_MAP_NAME,
    TOKENIZER_CONFIG_NAME,
    TOKENIZER_NAME,
)
from .._fileio import read_json_object

# transformers' PreTrainedTokenizerBase.SPECIAL_TOKENS_ATTRIBUTES, in its order (all_special_tokens keeps it).
SPECIAL_TOKENS_ATTRIBUTES = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token",
                             "mask_token")


def _file(folder: str, name: str) -> Optional[str]:
    path = os.path.join(folder, name)
    return path if os.path.isfile(path) else None


def chat_templates(folder: str) -> Optional[Any]:
    """The folder's chat template files: a string for chat_template.jinja alone, a dict of named ones, or None."""
    templates = {}
    single = _file(folder, CHAT_TEMPLATE_NAME)
    if single is not None:
        with open(single, encoding="utf-8") as handle:
            templates["default"] = handle.read()
    named = os.path.join(folder, CHAT_TEMPLATES_DIR)
    if os.path.isdir(named):
        for entry in sorted(os.listdir(named)):
            if entry.endswith(".jinja"):
                with open(os.path.join(named, entry), encoding="utf-8") as handle:
                    templates[entry[:-len(".jinja")]] = handle.read()
    if not templates:
        return None
    return templates["default"] if list(templates) == ["default"] else templates


def added_token(value: Any) -> Any:
    """A serialized AddedToken ({"__type": "AddedToken", "content": ...}) as a tokenizers.AddedToken; lists and
    dicts recursively; anything else unchanged (transformers' convert_added_tokens(save=False))."""
    from tokenizers import AddedToken

    if isinstance(value, dict) and value.get("__type") == "AddedToken":
        fields = {key: item for key, item in value.items() if key != "__type"}
        return AddedToken(**fields)
    if isinstance(value, (list, tuple)):
        return [added_token(item) for item in value]
    if isinstance(value, dict):
        return {key: added_token(item) for key, item in value.items()}
    return value


def tokenizer_kwargs(folder: str, overrides: dict[str, Any], file_added_tokens: Optional[dict[int, Any]]
                     ) -> dict[str, Any]:
    """The keyword arguments of the tokenizer in `folder`, `overrides` (the caller's) applied on top.

    `file_added_tokens` is tokenizer.json's {id: AddedToken} (the loaded backend's, so the file is parsed once),
    or None without a tokenizer.json.

    Keys: the config's entries, `chat_template`, `extra_special_tokens` (list), `model_specific_special_tokens`
    (dict of extra named tokens), `added_tokens_decoder` ({id: AddedToken}), named special tokens as str or
    AddedToken. Raises CheckpointError for invalid JSON, TypeError for a malformed added token.
    """
    from tokenizers import AddedToken

    config_path = _file(folder, TOKENIZER_CONFIG_NAME)
    kwargs: dict[str, Any] = dict(read_json_object(config_path)) if config_path is not None else {}
    for key in ("tokenizer_class", "init_inputs", "auto_map"):
        kwargs.pop(key, None)
    if _file(folder, TOKENIZER_NAME) is not None:
        kwargs.pop("add_bos_token", None)
        kwargs.pop("add_eos_token", None)
    templates = chat_templates(folder)
    if templates is not None:
        kwargs["chat_template"] = templates
    kwargs.update(overrides)
    if "additional_special_tokens" in kwargs and not kwargs.get("extra_special_tokens"):
        kwargs["extra_special_tokens"] = kwargs.pop("additional_special_tokens")
    model_specific = {key: kwargs.pop(key) for key in list(kwargs) if key not in SPECIAL_TOKENS_ATTRIBUTES
                      and key.endswith("_token") and isinstance(kwargs[key], (str, AddedToken, dict))}
    if isinstance(kwargs.get("extra_special_tokens"), dict):
        model_specific.update(kwargs.pop("extra_special_tokens"))
    if model_specific:
        kwargs["model_specific_special_tokens"] = model_specific

    decoder: dict[int, AddedToken] = {}
    if "added_tokens_decoder" in kwargs:
        for index, token in kwargs["added_tokens_decoder"].items():
            token = AddedToken(**token) if isinstance(token, dict) else token
            if not isinstance(token, AddedToken):
                raise TypeError(f"{config_path}: added_tokens_decoder[{index!r}] is a {type(token).__name__}; "
                                "each entry must be an object with the token's 'content'")
            decoder[int(index)] = token
    else:
        _legacy_added_tokens(folder, kwargs, overrides, decoder, file_added_tokens)
    kwargs["added_tokens_decoder"] = decoder
    kwargs = added_token(kwargs)
    by_content = {str(token): token for token in decoder.values()}
    for key in SPECIAL_TOKENS_ATTRIBUTES:
        if kwargs.get(key) is not None and by_content:
            kwargs[key] = by_content.get(str(kwargs[key]), kwargs[key])
    return kwargs


def _legacy_added_tokens(folder: str, kwargs: dict[str, Any], overrides: dict[str, Any], decoder: dict[int, Any],
                         file_added_tokens: Optional[dict[int, Any]]) -> None:
    """special_tokens_map.json, added_tokens.json and tokenizer.json's added tokens, for configs without
    added_tokens_decoder (transformers 5 saves none for tokenizers-backed classes)."""
    from tokenizers import AddedToken

    special_map = _file(folder, SPECIAL_TOKENS_MAP_NAME)
    if special_map is not None:
        for key, value in read_json_object(special_map).items():
            if overrides.get(key):
                continue
            if isinstance(value, dict) and key != "extra_special_tokens":
                value = AddedToken(**{**{k: v for k, v in value.items() if k not in ("special", "__type")},
                                      "special": True})
            elif key in ("extra_special_tokens", "additional_special_tokens") and isinstance(value, list):
                key = "extra_special_tokens"
                existing = list(kwargs.get("extra_special_tokens") or [])
                for token in value:
                    token = AddedToken(**token, special=True) if isinstance(token, dict) else token
                    if token not in existing:
                        existing.append(token)
                value = existing
            kwargs[key] = value
        if isinstance(kwargs.get("extra_special_tokens"), dict):
            kwargs.setdefault("model_specific_special_tokens", {}).update(kwargs.pop("extra_special_tokens"))
    added_file = _file(folder, ADDED_TOKENS_NAME)
    if added_file is not None:
        special = {str(kwargs[key]) for key in SPECIAL_TOKENS_ATTRIBUTES if kwargs.get(key)}
        special.update(str(token) for token in kwargs.get("extra_special_tokens") or [])
        for content, index in read_json_object(added_file).items():
            is_special = content in special
            decoder[index] = AddedToken(content, rstrip=False, lstrip=False, normalized=not is_special,
                                        special=is_special)
    decoder.update(file_added_tokens or {})
