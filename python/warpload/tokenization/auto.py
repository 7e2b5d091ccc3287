"""AutoTokenizer.from_pretrained: a folder or Hub repo id (the model's Hub options) to a FastTokenizer built from
tokenizer.json; a repo with only a slow tokenizer's files goes to transformers' AutoTokenizer, which converts them."""
from __future__ import annotations

import logging
import os
from typing import Any, Union

from .._fileio import read_json_object
from ..constants import (
    CHAT_TEMPLATES_DIR,
    CONFIG_NAME,
    SLOW_TOKENIZER_NAMES,
    TOKENIZER_CONFIG_NAME,
    TOKENIZER_FILE_NAMES,
    TOKENIZER_NAME,
)
from ..errors import CheckpointNotFoundError, SlowTokenizerError
from ..hub.resolve import HubOptions, resolve_files
from .classes import choose_pipeline
from .fast import FastTokenizer
from .settings import tokenizer_kwargs

logger = logging.getLogger(__name__)

# transformers' AutoTokenizer options that choose a class or a format; warpload reads tokenizer.json only.
IGNORED_OPTIONS = ("use_fast", "_from_auto", "trust_remote_code", "code_revision", "config", "tokenizer_type",
                   "mistral_format", "fix_mistral_regex")


class AutoTokenizer:
    """Loads tokenizers like transformers' AutoTokenizer, without transformers (for repos with a tokenizer.json)."""

    def __init__(self) -> None:
        raise OSError("AutoTokenizer is designed to be instantiated using the "
                      "`AutoTokenizer.from_pretrained(pretrained_model_name_or_path)` method.")

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: Union[str, "os.PathLike[str]"], *inputs: Any,
                        subfolder: str = "", **kwargs: Any) -> Any:
        """The tokenizer of a local folder or a Hub repo id, built as transformers 5's AutoTokenizer builds a
        TokenizersBackend: tokenizer.json, the special tokens of tokenizer_config.json (or special_tokens_map.json),
        the chat template (chat_template.jinja, additional_chat_templates/, or the config's).

        Hub options as in from_pretrained of the model: revision, cache_dir, force_download, local_files_only (or
        HF_HUB_OFFLINE=1), token, proxies, subfolder. Other keywords override the config (bos_token="<s>",
        padding_side="left", add_bos_token=True, chat_template=..., model_max_length=...). A repo without
        tokenizer.json but with a slow tokenizer's files (tokenizer.model, vocab.json + merges.txt, ...) is loaded
        by transformers' AutoTokenizer (returned as is); without transformers that raises SlowTokenizerError
        (an ImportError). Raises CheckpointNotFoundError (an OSError) when the folder has no tokenizer files, the
        HubError subclasses for the Hub, CheckpointError for invalid JSON.
        """
        if inputs:
            raise TypeError("AutoTokenizer.from_pretrained takes no positional arguments after the name; pass "
                            "options as keywords")
        location = os.fspath(pretrained_model_name_or_path)
        hub = HubOptions.pop_from(kwargs)
        for option in IGNORED_OPTIONS:
            kwargs.pop(option, None)
        # config.json's model_type takes part in transformers' choice of class (tokenization/classes.py).
        folder = resolve_files(location, hub, TOKENIZER_FILE_NAMES, subfolder=subfolder, folders=(CHAT_TEMPLATES_DIR,),
                               optional=(CONFIG_NAME,))
        if os.path.isfile(location):
            raise CheckpointNotFoundError(f"{location} is a file: pass the folder that holds {TOKENIZER_NAME} and "
                                          f"{TOKENIZER_CONFIG_NAME} (or a Hub repo id)")
        tokenizer_file = os.path.join(folder, TOKENIZER_NAME)
        if not os.path.isfile(tokenizer_file):
            return _slow_tokenizer(location, folder, kwargs)
        from tokenizers import Tokenizer

        backend = Tokenizer.from_file(tokenizer_file)
        explicit_bos_eos = "add_bos_token" in kwargs or "add_eos_token" in kwargs
        settings = tokenizer_kwargs(folder, kwargs, backend.get_added_tokens_decoder())
        # transformers records these in the init keywords, and so in the tokenizer_config.json it saves.
        settings.update(name_or_path=location, is_local=os.path.isdir(location), local_files_only=hub.local_files_only)
        settings.setdefault("backend", "tokenizers")
        tokenizer_config = _json_or_empty(folder, TOKENIZER_CONFIG_NAME)
        if "auto_map" in tokenizer_config:
            logger.warning("%s: tokenizer_config.json names a tokenizer class in remote code (auto_map); warpload "
                           "runs no remote code and builds the tokenizer from %s as it is", location, TOKENIZER_NAME)
        model_config = _json_or_empty(folder, CONFIG_NAME) or None
        pipeline = choose_pipeline(backend, tokenizer_file, tokenizer_config, model_config, settings)
        return FastTokenizer(pipeline.backend, settings, explicit_bos_eos=explicit_bos_eos,
                             class_name=pipeline.class_name, defaults=pipeline.defaults)


def _json_or_empty(folder: str, name: str) -> dict[str, Any]:
    path = os.path.join(folder, name)
    return read_json_object(path) if os.path.isfile(path) else {}


def _slow_tokenizer(location: str, folder: str, kwargs: dict[str, Any]) -> Any:
    """transformers' AutoTokenizer for a folder with a slow tokenizer's files; the typed errors otherwise."""
    present = [name for name in SLOW_TOKENIZER_NAMES if os.path.isfile(os.path.join(folder, name))]
    if not present:
        raise CheckpointNotFoundError(
            f"{location}: no tokenizer files in {folder} (looked for {TOKENIZER_NAME} and "
            f"{', '.join(SLOW_TOKENIZER_NAMES)}); pass the folder (or repo) that holds the tokenizer, or a "
            "subfolder= where it lives")
    try:
        import transformers
    except ImportError as err:
        raise SlowTokenizerError(
            f"{location} has no {TOKENIZER_NAME}, only a slow tokenizer's files ({', '.join(present)}); warpload "
            f"reads {TOKENIZER_NAME} only. Install transformers (`pip install transformers sentencepiece`) to have it "
            f"converted, or convert it once and save it with save_pretrained, which writes {TOKENIZER_NAME}") from err
    logger.warning("%s has no %s (only %s): loading it with transformers' AutoTokenizer", location, TOKENIZER_NAME,
                   ", ".join(present))
    # The folder is local by now (a Hub repo's files are in the cache): transformers needs no Hub options.
    return transformers.AutoTokenizer.from_pretrained(folder, **kwargs)
