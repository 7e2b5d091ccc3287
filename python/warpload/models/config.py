"""Model configs: config.json read and written as transformers does (generation_config.py holds GenerationConfig)."""
from __future__ import annotations

import copy
import json
import os
from typing import Any, ClassVar, Optional, Union

from .._fileio import read_json_object, write_atomically
from ..constants import CONFIG_NAME
from ..errors import CheckpointNotFoundError

PathLike = Union[str, "os.PathLike[str]"]

# Fields every transformers config has (PreTrainedConfig's, 5.x defaults); the rest come from the model's
# defaults or the file. to_diff_dict (what config.json holds) leaves out those still at these values.
_BASE_DEFAULTS: dict[str, Any] = {
    "architectures": None, "dtype": None, "output_hidden_states": False, "output_attentions": False,
    "return_dict": True, "chunk_size_feed_forward": 0, "is_encoder_decoder": False, "id2label": None,
    "label2id": None, "problem_type": None,
}
# Written as transformers_version when transformers is not installed: the release whose config.json format
# warpload writes (dtype, rope_parameters).
TRANSFORMERS_FORMAT_VERSION = "5.24.0"


class PretrainedConfig:
    """A model configuration: transformers' defaults for `model_type`, overridden by the file and by keywords.

    Fields the class does not know are kept as attributes and written back by `to_dict()`, as
    transformers does, so a config round-trips through warpload unchanged. `attribute_map`
    aliases (GPT-2's `hidden_size` for `n_embd`) read and write the real field.
    """

    model_type: ClassVar[str] = ""
    attribute_map: ClassVar[dict[str, str]] = {}
    defaults: ClassVar[dict[str, Any]] = {}
    # Keys accepted by __init__ that are folded into other fields by _post_init (legacy names).
    legacy_keys: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, **kwargs: Any) -> None:
        kwargs = {self.attribute_map.get(key, key): value for key, value in kwargs.items()}
        # transformers 4.x writes torch_dtype, 5.x dtype; dtype wins when both are set.
        legacy_dtype = kwargs.pop("torch_dtype", None)
        if kwargs.get("dtype") is None and legacy_dtype is not None:
            kwargs["dtype"] = legacy_dtype
        model_type = kwargs.pop("model_type", None) or type(self).model_type
        name_or_path = kwargs.pop("name_or_path", kwargs.pop("_name_or_path", ""))
        num_labels = kwargs.pop("num_labels", None)
        attn_implementation = kwargs.pop("attn_implementation", kwargs.pop("_attn_implementation", None))
        values = {**_BASE_DEFAULTS, **copy.deepcopy(self.defaults), **kwargs}
        object.__setattr__(self, "model_type", model_type)
        object.__setattr__(self, "_name_or_path", str(name_or_path))
        object.__setattr__(self, "_attn_implementation", attn_implementation)
        for key, value in values.items():
            object.__setattr__(self, key, value)
        # As transformers: two labels unless id2label says otherwise; JSON gives the ids as strings.
        if self.id2label is None:
            self.num_labels = num_labels if num_labels is not None else 2
        else:
            self.id2label = {int(key): value for key, value in self.id2label.items()}
        self._post_init()

    def _post_init(self) -> None:
        """Derives dependent fields (head_dim, rope parameters, layer types); subclasses override."""

    def __getattr__(self, name: str) -> Any:
        aliases = type(self).attribute_map
        if name in aliases:
            return getattr(self, aliases[name])
        raise AttributeError(f"{type(self).__name__} has no field {name!r}")

    def __setattr__(self, name: str, value: Any) -> None:
        object.__setattr__(self, type(self).attribute_map.get(name, name), value)

    @property
    def name_or_path(self) -> str:
        return self._name_or_path

    @name_or_path.setter
    def name_or_path(self, value: Any) -> None:
        object.__setattr__(self, "_name_or_path", str(value))

    @property
    def num_labels(self) -> int:
        """The number of labels of a classification head: len(id2label), as transformers counts them."""
        return len(self.id2label)

    @num_labels.setter
    def num_labels(self, num_labels: int) -> None:
        if self.id2label is None or len(self.id2label) != num_labels:
            self.id2label = {i: f"LABEL_{i}" for i in range(num_labels)}
            self.label2id = {label: i for i, label in self.id2label.items()}

    @property
    def use_return_dict(self) -> bool:
        """transformers' deprecated alias of return_dict."""
        return self.return_dict

    @property
    def torch_dtype(self) -> Any:
        """transformers 4's name of dtype."""
        return self.dtype

    @torch_dtype.setter
    def torch_dtype(self, value: Any) -> None:
        self.dtype = value

    def get_text_config(self, decoder: Optional[bool] = None, encoder: Optional[bool] = None) -> "PretrainedConfig":
        """The config of the text model: a nested `text_config` / `decoder` when the config has one, else itself
        (every built-in model is text only), as transformers' get_text_config."""
        decoders, encoders = ("decoder", "generator", "text_config"), ("text_encoder",)
        names = encoders + decoders if decoder == encoder else decoders if decoder else encoders
        nested = [vars(self)[name] for name in names if vars(self).get(name) is not None]
        if len(nested) > 1:
            raise ValueError(f"{type(self).__name__} has several text configs ({', '.join(names)}): pick one "
                             "directly, e.g. config.text_config")
        return nested[0] if nested else self

    def knows(self, key: str) -> bool:
        """Whether `key` names a field of this config (directly, by alias, or as a legacy key)."""
        return (key in vars(self) or key in type(self).attribute_map or key in type(self).legacy_keys
                or key == "num_labels")

    def update(self, config_dict: dict[str, Any]) -> None:
        """Sets every field of `config_dict` (transformers' update)."""
        for key, value in config_dict.items():
            setattr(self, key, value)

    def to_dict(self) -> dict[str, Any]:
        """Every field as JSON-compatible values (dtypes as their names), with `model_type`, `_name_or_path` and
        the `transformers_version` it is written for, as transformers' to_dict."""
        out = {key: _jsonable(value) for key, value in vars(self).items() if not key.startswith("_")}
        out["_name_or_path"] = self._name_or_path
        out["model_type"] = self.model_type
        out["transformers_version"] = transformers_version()
        return out

    def to_diff_dict(self) -> dict[str, Any]:
        """to_dict without the common fields still at transformers' defaults and without _name_or_path: what
        transformers writes to config.json. The model's own fields are always kept, as transformers keeps them."""
        base = PretrainedConfig().to_dict()
        return {key: value for key, value in self.to_dict().items()
                if key != "_name_or_path" and (key not in base or key == "transformers_version"
                                               or value != base[key])}

    def to_json_string(self, use_diff: bool = True) -> str:
        """The config as transformers writes it: to_diff_dict (or to_dict), keys sorted, two-space indent."""
        return json.dumps(self.to_diff_dict() if use_diff else self.to_dict(), indent=2, sort_keys=True) + "\n"

    def save_pretrained(self, save_directory: PathLike, push_to_hub: bool = False, **kwargs: Any) -> None:
        """Writes config.json (to_json_string) into save_directory (created if needed), atomically.
        Raises NotImplementedError for push_to_hub=True (warpload does not upload), NotADirectoryError for a file."""
        if push_to_hub:
            raise NotImplementedError(UPLOAD_REFUSAL)
        folder = os.fspath(save_directory)
        if os.path.isfile(folder):
            raise NotADirectoryError(f"{folder} is a file; save_pretrained writes config.json into a folder")
        os.makedirs(folder, exist_ok=True)
        write_json_text(os.path.join(folder, CONFIG_NAME), self.to_json_string())

    @classmethod
    def from_dict(cls, config_dict: dict[str, Any], **kwargs: Any) -> "PretrainedConfig":
        return cls(**{**config_dict, **kwargs})

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: PathLike, *, subfolder: str = "",
                        return_unused_kwargs: bool = False, **kwargs: Any) -> Any:
        """Reads config.json from a folder, a JSON file or a Hub repo id, and applies keyword overrides.

        Overrides that name a field of the config replace it; the others are returned as unused
        when `return_unused_kwargs` is True (then the result is `(config, unused)`), as in
        transformers. Raises CheckpointNotFoundError without a config.json, CheckpointError for
        invalid JSON.
        """
        # The one import from models/ up into loading/: the Hub lives there (see pyproject's import contracts).
        from ..loading.entry import config_from_pretrained

        return config_from_pretrained(cls, pretrained_model_name_or_path, subfolder=subfolder,
                                      return_unused_kwargs=return_unused_kwargs, **kwargs)

    @classmethod
    def from_local(cls, location: PathLike, *, subfolder: str = "",
                   overrides: Optional[dict[str, Any]] = None) -> tuple["PretrainedConfig", dict[str, Any]]:
        """The config of a local folder's (or file's) config.json with `overrides` applied, and the overrides
        it does not know. Raises CheckpointNotFoundError without a config.json, CheckpointError for bad JSON."""
        overrides = overrides if overrides is not None else {}
        config_dict, path = read_config_dict(location, subfolder)
        config = build_config(cls, config_dict, overrides, path)
        return config, {key: value for key, value in overrides.items() if not config.knows(key)}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PretrainedConfig) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        return f"{type(self).__name__} {self.to_json_string()}"


UPLOAD_REFUSAL = ("push_to_hub=True: warpload saves locally and does not upload; save, then upload the folder "
                  "with huggingface_hub.upload_folder(repo_id=..., folder_path=...)")


def transformers_version() -> str:
    """The installed transformers' version (read from its metadata, transformers is not imported), else the
    version whose format warpload writes."""
    from importlib import metadata

    try:
        return metadata.version("transformers")
    except metadata.PackageNotFoundError:
        return TRANSFORMERS_FORMAT_VERSION


def build_config(cls: type, config_dict: dict[str, Any], overrides: dict[str, Any], path: str) -> PretrainedConfig:
    """A `cls` config from a parsed config.json at `path`, with the overrides that name its fields applied."""
    probe = cls(**config_dict)
    consumed = {key: value for key, value in overrides.items() if probe.knows(key)}
    if not consumed:
        probe.name_or_path = os.path.dirname(path)
        return probe
    config = cls(**{**config_dict, **consumed})
    config.name_or_path = os.path.dirname(path)
    return config


def read_config_dict(location: PathLike, subfolder: str = "") -> tuple[dict[str, Any], str]:
    """The parsed config.json of a local folder (or the JSON file given), and its path."""
    location = os.fspath(location)
    path = os.path.join(location, subfolder, CONFIG_NAME) if os.path.isdir(location) else location
    if not os.path.isfile(path):
        raise CheckpointNotFoundError(
            f"{location} does not appear to have a file named {CONFIG_NAME}; pass the folder that holds the "
            "checkpoint's config.json (or config=<a config object>)")
    return read_json_object(path), path


def write_json_text(path: str, text: str) -> None:
    """Writes `text` (JSON) to `path` atomically."""

    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(text)

    write_atomically(path, write)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(item) for item in value]
    if type(value).__module__ == "torch" and str(value).startswith("torch."):
        return str(value).removeprefix("torch.")  # a torch.dtype, named as config.json names it
    return value


class GPT2Config(PretrainedConfig):
    """transformers' GPT2Config (5.x defaults)."""

    model_type = "gpt2"
    attribute_map = {"hidden_size": "n_embd", "max_position_embeddings": "n_positions",
                     "num_attention_heads": "n_head", "num_hidden_layers": "n_layer"}
    defaults = {
        "vocab_size": 50257, "n_positions": 1024, "n_embd": 768, "n_layer": 12, "n_head": 12, "n_inner": None,
        "activation_function": "gelu_new", "resid_pdrop": 0.1, "embd_pdrop": 0.1, "attn_pdrop": 0.1,
        "layer_norm_epsilon": 1e-5, "initializer_range": 0.02, "summary_type": "cls_index",
        "summary_use_proj": True, "summary_activation": None, "summary_proj_to_labels": True,
        "summary_first_dropout": 0.1, "scale_attn_weights": True, "use_cache": True, "bos_token_id": 50256,
        "eos_token_id": 50256, "pad_token_id": None, "scale_attn_by_inverse_layer_idx": False,
        "reorder_and_upcast_attn": False, "add_cross_attention": False, "tie_word_embeddings": True,
    }


class RopeConfig(PretrainedConfig):
    """Configs with rotary embeddings: legacy `rope_theta` / `rope_scaling` fold into `rope_parameters`."""

    legacy_keys = frozenset({"rope_theta", "rope_scaling"})
    default_rope_theta: ClassVar[float] = 10_000.0

    def _post_init(self) -> None:
        if getattr(self, "head_dim", None) is None and "head_dim" in vars(self):
            self.head_dim = self.hidden_size // self.num_attention_heads
        if self.num_key_value_heads is None:
            self.num_key_value_heads = self.num_attention_heads
        self._standardize_rope()

    def _standardize_rope(self) -> None:
        # transformers 5 keeps one `rope_parameters` dict; 4.x files (and keyword overrides) give
        # `rope_theta` and `rope_scaling`, which update it here. Unlike transformers 5, which leaves a
        # `rope_theta=` keyword unused (and then fails in the model constructor), warpload applies it,
        # as 4.x did.
        fields = vars(self)
        scaling = fields.pop("rope_scaling", None)
        theta = fields.pop("rope_theta", None)
        params = dict(self.rope_parameters or {})
        if scaling:
            kept_theta = {"rope_theta": params["rope_theta"]} if "rope_theta" in params else {}
            params = {**kept_theta, **scaling}
        if theta is not None:
            params["rope_theta"] = theta
        params.setdefault("rope_theta", self.default_rope_theta)
        params.setdefault("rope_type", params.get("type", "default"))
        if params["rope_type"] in ("llama3", "yarn", "longrope"):
            params.setdefault("original_max_position_embeddings", self.max_position_embeddings)
        self.rope_parameters = params


class LlamaConfig(RopeConfig):
    """transformers' LlamaConfig (5.x defaults)."""

    model_type = "llama"
    defaults = {
        "vocab_size": 32000, "hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32,
        "num_attention_heads": 32, "num_key_value_heads": None, "hidden_act": "silu",
        "max_position_embeddings": 2048, "initializer_range": 0.02, "rms_norm_eps": 1e-6, "use_cache": True,
        "pad_token_id": None, "bos_token_id": 1, "eos_token_id": 2, "pretraining_tp": 1,
        "tie_word_embeddings": False, "rope_parameters": None, "attention_bias": False, "attention_dropout": 0.0,
        "mlp_bias": False, "head_dim": None,
    }


class MistralConfig(RopeConfig):
    """transformers' MistralConfig (5.x defaults): Llama without biases, with a sliding window."""

    model_type = "mistral"
    defaults = {
        "vocab_size": 32000, "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
        "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": None, "hidden_act": "silu",
        "max_position_embeddings": 4096 * 32, "initializer_range": 0.02, "rms_norm_eps": 1e-6, "use_cache": True,
        "pad_token_id": None, "bos_token_id": 1, "eos_token_id": 2, "tie_word_embeddings": False,
        "rope_parameters": None, "sliding_window": 4096, "attention_dropout": 0.0,
    }


class Qwen2Config(RopeConfig):
    """transformers' Qwen2Config (5.x defaults): sliding window only on layers >= max_window_layers, if enabled."""

    model_type = "qwen2"
    defaults = {
        "vocab_size": 151936, "hidden_size": 4096, "intermediate_size": 22016, "num_hidden_layers": 32,
        "num_attention_heads": 32, "num_key_value_heads": 32, "hidden_act": "silu", "max_position_embeddings": 32768,
        "initializer_range": 0.02, "rms_norm_eps": 1e-6, "use_cache": True, "tie_word_embeddings": False,
        "rope_parameters": None, "use_sliding_window": False, "sliding_window": 4096, "max_window_layers": 28,
        "layer_types": None, "attention_dropout": 0.0, "pad_token_id": None, "bos_token_id": None,
        "eos_token_id": None,
    }

    def _post_init(self) -> None:
        super()._post_init()
        if not self.use_sliding_window:
            self.sliding_window = None
        if self.layer_types is None:
            self.layer_types = [
                "sliding_attention" if self.sliding_window is not None and i >= self.max_window_layers
                else "full_attention"
                for i in range(self.num_hidden_layers)
            ]


class Qwen3Config(Qwen2Config):
    """transformers' Qwen3Config (5.x defaults): Qwen2 plus q/k norms and an explicit head_dim."""

    model_type = "qwen3"
    defaults = {**Qwen2Config.defaults, "head_dim": 128, "attention_bias": False}


CONFIG_CLASSES: dict[str, type[PretrainedConfig]] = {
    cls.model_type: cls for cls in (GPT2Config, LlamaConfig, MistralConfig, Qwen2Config, Qwen3Config)
}


def config_for_model(model_type: str, **kwargs: Any) -> PretrainedConfig:
    """A config of `model_type` with transformers' defaults and the given fields; model types without a
    built-in class give a plain PretrainedConfig that keeps every field."""
    return CONFIG_CLASSES.get(model_type, PretrainedConfig)(model_type=model_type, **kwargs)


def config_of_folder(location: PathLike, *, subfolder: str = "", shown_as: Optional[str] = None,
                     overrides: Optional[dict[str, Any]] = None) -> tuple[PretrainedConfig, dict[str, Any]]:
    """The config class `model_type` picks, read from a local config.json, and the overrides it does not know.
    Raises ValueError when the file has no `model_type` (naming `shown_as`), CheckpointNotFoundError without one."""
    overrides = overrides if overrides is not None else {}
    config_dict, path = read_config_dict(location, subfolder)
    model_type = config_dict.get("model_type")
    if not model_type:
        raise ValueError(f"Unrecognized model in {shown_as or os.fspath(location)}. Should have a `model_type` key "
                         f"in its {CONFIG_NAME}.")
    config = build_config(CONFIG_CLASSES.get(model_type, PretrainedConfig), config_dict, overrides, path)
    return config, {key: value for key, value in overrides.items() if not config.knows(key)}
