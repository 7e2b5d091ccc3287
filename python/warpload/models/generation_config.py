"""GenerationConfig: transformers 5's generation options, read from and written to generation_config.json as it does.

As in transformers 5, every field is None until a file, a keyword or the model sets it; `generate`
fills what is still None from the model's generation config, then from GENERATE_DEFAULTS. This
module imports no torch, so `warpload.GenerationConfig` stays cheap to import.
"""
from __future__ import annotations

import copy
import json
import os
from typing import Any, Optional, Union

from .._fileio import read_json_object, write_atomically
from ..constants import GENERATION_CONFIG_NAME
from ..errors import CheckpointNotFoundError, GenerationOptionError, UnsupportedGenerationOptionError

PathLike = Union[str, "os.PathLike[str]"]

# transformers 5.24's GenerationConfig fields, in its order (all None by default).
FIELDS = (
    "max_length", "max_new_tokens", "min_length", "min_new_tokens", "early_stopping", "max_time", "stop_strings",
    "do_sample", "num_beams", "use_mtp", "use_cache", "cache_implementation", "cache_config", "max_cache_len",
    "temperature", "top_k", "top_p", "min_p", "top_h", "typical_p", "epsilon_cutoff", "eta_cutoff",
    "repetition_penalty", "encoder_repetition_penalty", "length_penalty", "no_repeat_ngram_size", "bad_words_ids",
    "renormalize_logits", "forced_bos_token_id", "forced_eos_token_id", "remove_invalid_values",
    "exponential_decay_length_penalty", "suppress_tokens", "begin_suppress_tokens", "sequence_bias",
    "token_healing", "guidance_scale", "watermarking_config", "num_return_sequences", "output_attentions",
    "output_hidden_states", "output_scores", "output_logits", "return_dict_in_generate", "pad_token_id",
    "bos_token_id", "eos_token_id", "encoder_no_repeat_ngram_size", "decoder_start_token_id", "is_assistant",
    "num_assistant_tokens", "num_assistant_tokens_schedule", "assistant_confidence_threshold",
    "prompt_lookup_num_tokens", "max_matching_ngram_size", "assistant_early_exit", "assistant_lookbehind",
    "target_lookbehind", "assistant_ensemble_weight", "speculation_type", "compile_config", "disable_compile",
    "continuous_batching_config", "low_memory", "penalty_alpha", "dola_layers", "diversity_penalty",
    "num_beam_groups", "constraints", "force_words_ids", "prefill_chunk_size",
)
# Written by transformers for bookkeeping; ignored by equality (transformers' METADATA_FIELDS).
METADATA_FIELDS = ("_from_model_config", "transformers_version")

# What generate() uses for a field neither the call nor the model set
# (transformers' GenerationConfig._get_default_generation_params).
GENERATE_DEFAULTS: dict[str, Any] = {
    "max_length": 20, "min_length": 0, "do_sample": False, "use_cache": True, "early_stopping": False,
    "num_beams": 1, "temperature": 1.0, "top_k": 50, "top_p": 1.0, "typical_p": 1.0, "repetition_penalty": 1.0,
    "length_penalty": 1.0, "no_repeat_ngram_size": 0, "encoder_no_repeat_ngram_size": 0, "bad_words_ids": None,
    "num_return_sequences": 1, "output_scores": False, "return_dict_in_generate": False,
    "forced_bos_token_id": None, "forced_eos_token_id": None, "remove_invalid_values": False,
    "exponential_decay_length_penalty": None, "suppress_tokens": None, "begin_suppress_tokens": None,
    "epsilon_cutoff": 0.0, "eta_cutoff": 0.0, "encoder_repetition_penalty": 1.0, "num_assistant_tokens": 20,
    "num_assistant_tokens_schedule": "constant", "assistant_confidence_threshold": 0.4, "assistant_lookbehind": 10,
    "target_lookbehind": 10, "num_beam_groups": 1, "diversity_penalty": 0.0,
}


class GenerationConfig:
    """transformers' GenerationConfig: the options of `generate`, as generation_config.json holds them.

    Fields transformers does not know are kept (custom entries) and written back, as it does.
    """

    def __init__(self, **kwargs: Any) -> None:
        kwargs.pop("_commit_hash", None)
        for field in FIELDS:
            setattr(self, field, kwargs.pop(field, None))
        self._from_model_config = kwargs.pop("_from_model_config", None)
        self.transformers_version = kwargs.pop("transformers_version", None)
        if not self._from_model_config:
            for key, value in kwargs.items():
                setattr(self, key, value)
        self.validate()

    def validate(self, strict: bool = False) -> None:
        """Raises GenerationOptionError (a ValueError) for values no generate call can use.

        Checks what is cheap and certain from the config alone; lengths against a prompt are checked
        by generate. `strict` is accepted for transformers' signature and changes nothing here.
        """
        problems = []
        if self.early_stopping not in (None, True, False, "never"):
            problems.append(f"early_stopping={self.early_stopping!r} must be True, False or 'never'")
        for field in ("max_new_tokens", "num_beams", "num_return_sequences"):
            value = getattr(self, field)
            if value is not None and (not isinstance(value, int) or value < 1):
                problems.append(f"{field}={value!r} must be a positive integer")
        for field in ("min_new_tokens", "min_length", "max_length", "no_repeat_ngram_size", "top_k"):
            value = getattr(self, field)
            if value is not None and (not isinstance(value, int) or value < 0):
                problems.append(f"{field}={value!r} must be a non-negative integer")
        if self.num_beams is not None and self.num_return_sequences is not None \
                and self.num_return_sequences > self.num_beams and not self.do_sample:
            problems.append(f"num_return_sequences={self.num_return_sequences} is more than num_beams="
                            f"{self.num_beams}; beam search returns at most num_beams sequences per prompt")
        if self.bad_words_ids is not None and not (isinstance(self.bad_words_ids, list) and self.bad_words_ids and all(
                isinstance(word, list) and word and all(isinstance(t, int) and t >= 0 for t in word)
                for word in self.bad_words_ids)):
            problems.append(f"bad_words_ids={self.bad_words_ids!r} must be a non-empty list of non-empty lists of "
                            "token ids")
        if problems:
            raise GenerationOptionError("Invalid generation config: " + "; ".join(problems))

    def update(self, defaults_only: bool = False, allow_custom_entries: bool = False,
               **kwargs: Any) -> dict[str, Any]:
        """Sets the fields named in `kwargs` (with `defaults_only`, only those still None; with
        `allow_custom_entries`, unknown names too); returns the keywords it did not use, as transformers does."""
        used = set()
        for key, value in kwargs.items():
            if allow_custom_entries and not hasattr(self, key):
                setattr(self, key, value)
                used.add(key)
            elif hasattr(self, key):
                if not defaults_only or getattr(self, key) is None:
                    setattr(self, key, value)
                used.add(key)
        self.validate()
        return {key: value for key, value in kwargs.items() if key not in used}

    def to_dict(self) -> dict[str, Any]:
        """Every field (custom entries included) as JSON-compatible values."""
        return copy.deepcopy({key: value for key, value in vars(self).items()
                              if key == "_from_model_config" or not key.startswith("_")})

    def to_diff_dict(self) -> dict[str, Any]:
        """The fields that differ from a fresh GenerationConfig(): what generation_config.json holds."""
        defaults = GenerationConfig().to_dict()
        return {key: value for key, value in self.to_dict().items()
                if key not in defaults or value != defaults[key]}

    def to_json_string(self, use_diff: bool = True, ignore_metadata: bool = False,
                       keys_to_pop: Optional[list[str]] = None) -> str:
        """The config as transformers serialises it: sorted keys, indent 2, only the set fields by default."""
        config = self.to_diff_dict() if use_diff else self.to_dict()
        for key in (keys_to_pop or []) + (list(METADATA_FIELDS) if ignore_metadata else []):
            config.pop(key, None)
        return json.dumps(_string_keys(config), indent=2, sort_keys=True) + "\n"

    def to_json_file(self, json_file_path: PathLike, use_diff: bool = True) -> None:
        """Writes to_json_string() to a file, atomically."""
        text = self.to_json_string(use_diff=use_diff, keys_to_pop=["compile_config"])

        def write(tmp: str) -> None:
            with open(tmp, "w", encoding="utf-8") as handle:
                handle.write(text)

        write_atomically(os.fspath(json_file_path), write)

    def save_pretrained(self, save_directory: PathLike, config_file_name: Optional[str] = None,
                        push_to_hub: bool = False, **kwargs: Any) -> None:
        """Writes generation_config.json (or `config_file_name`) into save_directory, created if needed.

        Raises GenerationOptionError for an invalid config, NotADirectoryError when save_directory is
        a file, UnsupportedGenerationOptionError for push_to_hub=True (upload with huggingface_hub).
        """
        if push_to_hub:
            raise UnsupportedGenerationOptionError(
                "GenerationConfig.save_pretrained(push_to_hub=True) is not supported by warpload; save the folder, "
                "then upload it with huggingface_hub.upload_folder")
        self.validate()
        folder = os.fspath(save_directory)
        if os.path.isfile(folder):
            raise NotADirectoryError(f"{folder} is a file; save_pretrained writes {GENERATION_CONFIG_NAME} "
                                     "into a folder")
        os.makedirs(folder, exist_ok=True)
        self.to_json_file(os.path.join(folder, config_file_name or GENERATION_CONFIG_NAME))

    @classmethod
    def from_dict(cls, config_dict: dict[str, Any], **kwargs: Any) -> Any:
        """A config of `config_dict` with `kwargs` applied; `(config, unused)` with return_unused_kwargs=True."""
        return_unused_kwargs = kwargs.pop("return_unused_kwargs", False)
        config = cls(**{**config_dict, **kwargs})
        unused = config.update(**kwargs)
        return (config, unused) if return_unused_kwargs else config

    @classmethod
    def from_model_config(cls, model_config: Any) -> "GenerationConfig":
        """The generation fields of a model config (token ids, use_cache), as transformers derives them."""
        values = model_config if isinstance(model_config, dict) else model_config.to_dict()
        config = cls(_from_model_config=True)
        for field in FIELDS:
            if values.get(field) is not None:
                setattr(config, field, values[field])
        return config

    @classmethod
    def from_pretrained(cls, pretrained_model_name: PathLike, config_file_name: Optional[str] = None,
                        **kwargs: Any) -> "GenerationConfig":
        """Reads generation_config.json (or `config_file_name`) of a local folder or a Hub repo id.

        Hub options (revision, token, cache_dir, local_files_only, ...) are those of
        from_pretrained; other keywords override fields (`return_unused_kwargs=True` gives
        `(config, unused)`). Raises CheckpointNotFoundError (a FileNotFoundError) when the folder
        has no such file, HubError subclasses (OSError) when the Hub cannot provide it. For a repo id
        only that file is fetched (into the shared cache).
        """
        # The one import from models/ up into loading/: the Hub lives there (see pyproject's import contracts).
        from ..loading.entry import generation_config_from_pretrained

        return generation_config_from_pretrained(cls, pretrained_model_name, config_file_name, **kwargs)

    @classmethod
    def from_local(cls, location: PathLike, config_file_name: Optional[str] = None, *, subfolder: str = "",
                   **kwargs: Any) -> Any:
        """from_pretrained for a local folder or JSON file (no Hub)."""
        location = os.fspath(location)
        name = config_file_name or GENERATION_CONFIG_NAME
        path = os.path.join(location, subfolder, name) if os.path.isdir(location) else location
        if not os.path.isfile(path):
            raise CheckpointNotFoundError(
                f"{location} does not appear to have a file named {name}; pass the folder that holds it "
                "(or build the config with GenerationConfig(...))")
        return cls.from_dict(read_json_object(path), **kwargs)

    @classmethod
    def from_folder(cls, folder: PathLike, *, subfolder: str = "") -> Optional["GenerationConfig"]:
        """The folder's generation_config.json, or None when it has none (what from_pretrained loads)."""
        path = os.path.join(os.fspath(folder), subfolder, GENERATION_CONFIG_NAME)
        return cls.from_local(path) if os.path.isfile(path) else None

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, GenerationConfig):
            return False
        return (self.to_json_string(use_diff=False, ignore_metadata=True)
                == other.to_json_string(use_diff=False, ignore_metadata=True))

    def __hash__(self) -> int:
        return hash(self.to_json_string(ignore_metadata=True))

    def __repr__(self) -> str:
        return f"GenerationConfig {self.to_json_string(ignore_metadata=True)}"


def _string_keys(value: Any) -> Any:
    """JSON object keys as strings (sequence_bias maps token tuples), as transformers writes them."""
    if isinstance(value, dict):
        return {str(key): _string_keys(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_string_keys(item) for item in value]
    return value
