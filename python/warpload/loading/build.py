"""Building the model of a from_pretrained call: its config, the class (built-in or transformers'), then the
model on the meta device, filled from its sources."""
from __future__ import annotations

import copy
import difflib
import importlib.util
import logging
import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional, Union

from ..errors import ArchitectureNotSupportedError, AttentionUnavailableError
from ..models.config import PretrainedConfig, config_for_model, config_of_folder
from ..models.forward_options import DEFAULT_ATTENTION, NATIVE_ATTENTION
from ..models.generation_config import GenerationConfig
from ..models.registry import ARCHITECTURES, CAUSAL_LM_CLASSES
from ..tf.checkpoint import TFCheckpoint, openai_gpt2_config
from . import transformers_backend
from .dispatch import plan_spread
from .options import LoadOptions, known_options

if TYPE_CHECKING:
    import torch

    from ..hub.remote_code import RemoteCode
    from .load_state import Fill, Source

Sources = Union[dict[str, "Source"], TFCheckpoint]

# The module each FlashAttention version imports (transformers' FLASH_ATTENTION_COMPATIBILITY_MATRIX).
FLASH_ATTENTION_MODULES = {"flash_attention_2": (2, "flash_attn"), "flash_attention_3": (3, "flash_attn_interface")}

logger = logging.getLogger(__name__)


@dataclass
class ModelChoice:
    """What a call builds: warpload's reading of the config, the keywords left for the constructor, and whether
    the built-in class or transformers' builds it. `config` is the caller's config= (or the one an OpenAI TF1
    folder implies), which the transformers backend reads itself."""

    config: Any
    model_config: PretrainedConfig
    model_kwargs: dict[str, Any]
    builtin: Optional[type]
    use_transformers: bool
    remote_code: "RemoteCode"
    location: Optional[str]
    folder: Optional[str]  # the local checkpoint folder (generation_config.json), None for a state_dict

    @property
    def class_name(self) -> str:
        return self.builtin.__name__ if self.builtin is not None else type(self.model_config).__name__


def choose_model(options: LoadOptions, location: Optional[str], remote_code: "RemoteCode") -> ModelChoice:
    """Reads the config and decides the class. Raises ArchitectureNotSupportedError (no class can build it),
    ImportError (backend='transformers' without transformers), ValueError (no config to read)."""
    config = options.config
    if config is None and options.from_tf and location is not None and os.path.isdir(location):
        config = openai_gpt2_config_object(os.path.join(location, options.subfolder))
    check_attention_kernel(options.attn_implementation)
    model_config, model_kwargs = read_config(location, config, options.subfolder, options.kwargs, options.model_class)
    # The built-in models read it at each forward, as transformers' do (model.config._attn_implementation).
    model_config._attn_implementation = (options.attn_implementation or getattr(model_config, "_attn_implementation",
                                                                                None) or DEFAULT_ATTENTION)
    builtin, reasons = builtin_choice(model_config, options.model_class, options.attn_implementation)
    if "AutoModelForCausalLM" in remote_code.classes:
        # transformers runs trusted remote code even for a model_type it knows: so does the backend.
        reasons.append("config.json's auto_map names remote code and trust_remote_code=True")
    folder = os.path.join(location, options.subfolder) if location is not None and os.path.isdir(location) else None
    builtin = options.model_class or builtin
    with_transformers = use_transformers(options.backend, reasons)
    if not with_transformers and options.model_class is None:
        refuse_unknown_keywords(model_kwargs, model_config)
    return ModelChoice(config, model_config, model_kwargs, builtin, with_transformers, remote_code, location, folder)


def refuse_unknown_keywords(model_kwargs: dict[str, Any], config: "PretrainedConfig") -> None:
    """A built-in model takes nothing but its config: a keyword left over is neither an option nor a config
    field. Raises TypeError naming it (and the closest option or field), before any weight is read."""
    if not model_kwargs:
        return
    key = sorted(model_kwargs)[0]
    candidates = [*known_options(()), *vars(config)]
    close = difflib.get_close_matches(key, candidates, n=1, cutoff=0.75)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise TypeError(f"from_pretrained() got an unexpected keyword argument {key!r}: it is neither a from_pretrained "
                    f"option nor a field of {type(config).__name__}{hint}")


def build_and_fill(options: LoadOptions, choice: ModelChoice, sources: Sources, dtype: "torch.dtype",
                   fill: "Fill") -> tuple[Any, Any, float]:
    """The model on the meta device, its parameters filled from `sources` by `fill`; (model, loading info,
    the time planning ended)."""
    if choice.use_transformers:
        return _build_with_transformers(options, choice, sources, dtype, fill)
    return _build_builtin(options, choice, sources, dtype, fill)


def openai_gpt2_config_object(folder: str) -> Optional[PretrainedConfig]:
    """The GPT-2 config of an OpenAI TF1 release folder (hparams.json, no config.json), else None.
    transformers needs a config.json here; keyword overrides then go to the model, as with config=."""
    fields = openai_gpt2_config(folder)
    return None if fields is None else config_for_model("gpt2", **fields)


def model_sources(sources: Sources, model: Any) -> dict[str, "Source"]:
    """A TF checkpoint is mapped once the model exists: transformers' TF rules need its parameter names and
    shapes (squeezes, base-model prefix; formats.md 5.2-5.3)."""
    if not isinstance(sources, TFCheckpoint):
        return sources
    from ..engine.tf_tensors import tf_sources

    shapes = {name: tuple(parameter.shape) for name, parameter in model.named_parameters()}
    return tf_sources(sources, shapes, model.base_model_prefix)


def read_config(location: Optional[str], config: Any, subfolder: str, kwargs: dict[str, Any],
                 model_class: Optional[type]) -> tuple["PretrainedConfig", dict[str, Any]]:
    """The warpload config and the keywords left for the model constructor (transformers' split).

    A config object is deep-copied and every keyword goes to the constructor; otherwise keywords
    naming config fields override them. A transformers config object is converted field by field.
    """
    if isinstance(config, PretrainedConfig):
        return copy.deepcopy(config), dict(kwargs)
    if config is not None and hasattr(config, "to_dict") and hasattr(config, "model_type"):
        return config_for_model(**config.to_dict()), dict(kwargs)
    source = config if config is not None else location
    if source is None:
        raise ValueError("state_dict= needs config= (a config object, or the path of a folder or config.json)")
    if config is None and os.path.isfile(source):
        raise ValueError(f"{source} is a weights file: pass config= (a config object, or a folder or config.json "
                         "path) with it")
    subfolder = subfolder if config is None else ""
    if model_class is not None:
        return model_class.config_class.from_pretrained(source, subfolder=subfolder, return_unused_kwargs=True,
                                                        **kwargs)
    # The folder is resolved and remote code decided by the caller: only the architecture is read here.
    return config_of_folder(source, subfolder=subfolder, overrides=kwargs)


def check_attention_kernel(attn_implementation: Optional[str]) -> None:
    """Raises AttentionUnavailableError (an ImportError), worded as transformers words it, when a FlashAttention
    version is asked for and its package is not installed. An installed one is left to transformers' class."""
    if attn_implementation not in FLASH_ATTENTION_MODULES:
        return
    version, module = FLASH_ATTENTION_MODULES[attn_implementation]
    if importlib.util.find_spec(module) is None:
        raise AttentionUnavailableError(
            f"FlashAttention{version} has been toggled on, but it cannot be used due to the following error: the "
            f"package for FlashAttention{version} doesn't seem to be installed.")


def builtin_choice(config: "PretrainedConfig", model_class: Optional[type],
                    attn_implementation: Optional[str]) -> tuple[Optional[type], list[str]]:
    """The built-in class for the config and the reasons it cannot serve this call (empty when it can)."""
    cls = model_class if model_class is not None else CAUSAL_LM_CLASSES.get(config.model_type)
    if cls is None or not isinstance(config, cls.config_class):
        return None, [f"model_type {config.model_type!r} has no built-in implementation"]
    reasons = cls.unsupported_features(config)
    if attn_implementation not in (None, *NATIVE_ATTENTION):
        reasons.append(f"attn_implementation={attn_implementation!r} (the built-in models run "
                       f"{' and '.join(NATIVE_ATTENTION)})")
    return cls, reasons


def use_transformers(backend: str, reasons: list[str]) -> bool:
    """Whether transformers' class builds the model; raises when neither it nor a built-in class can."""
    available = transformers_backend.is_available()
    if backend == "transformers" and not available:
        raise ImportError(f"backend='transformers' needs transformers: {transformers_backend.INSTALL_HINT}")
    if backend == "transformers" or (backend == "auto" and reasons and available):
        return True
    if reasons:
        hint = ("pass backend='transformers' to use transformers' class" if available
                else f"{transformers_backend.INSTALL_HINT} to load it with transformers' class")
        raise ArchitectureNotSupportedError(
            f"warpload's built-in models cannot load this checkpoint: {'; '.join(reasons)}. Built-in architectures: "
            f"{', '.join(sorted(ARCHITECTURES))}. To load others, {hint}.")
    return False


def _build_builtin(options: LoadOptions, choice: ModelChoice, sources: Sources, dtype: "torch.dtype",
                   fill: "Fill") -> tuple[Any, Any, float]:
    import torch

    from .load_state import load_builtin

    cls = choice.builtin
    with torch.device("meta"):
        model = cls(choice.model_config, *options.model_args, **choice.model_kwargs)
    sources = model_sources(sources, model)
    spread = plan_spread(options, model, dtype)
    planned = time.perf_counter()
    info = load_builtin(model, sources, dtype, options.ignore_mismatched_sizes, options.fill_device,
                        options.zero_copy, fill, spread)
    if spread is not None:
        spread.dispatch(model)
    report = info.report()
    if report:
        logger.warning("%s load report from %s:\n%s", cls.__name__, choice.folder or "the given state_dict", report)
    if choice.folder is not None and hasattr(model, "generation_config"):
        model.generation_config = GenerationConfig.from_folder(choice.folder) or model.generation_config
    return model, info, planned


def _build_with_transformers(options: LoadOptions, choice: ModelChoice, sources: Sources, dtype: "torch.dtype",
                             fill: "Fill") -> tuple[Any, Any, float]:
    hf_config, model_kwargs = transformers_backend.load_config(choice.location, choice.config, options.subfolder,
                                                               options.kwargs, choice.remote_code)
    if options.attn_implementation is not None:
        hf_config._attn_implementation = options.attn_implementation
    if options.experts_implementation is not None:
        hf_config._experts_implementation = options.experts_implementation
    model_class = options.model_class
    model = transformers_backend.build_on_meta(hf_config, dtype, options.model_args, model_kwargs,
                                               model_class.__name__ if model_class is not None else None,
                                               choice.remote_code)
    sources = model_sources(sources, model)
    spread = plan_spread(options, model, dtype)
    planned = time.perf_counter()
    info = transformers_backend.load(model, sources, dtype, choice.location, options.ignore_mismatched_sizes,
                                     options.fill_device, options.zero_copy, fill, spread)
    if spread is not None:
        spread.dispatch(model)
    transformers_backend.load_generation_config(model, choice.folder)
    return model, info, planned
