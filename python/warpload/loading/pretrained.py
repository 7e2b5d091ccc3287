"""from_pretrained: options -> config -> weight files -> plan -> parameters, for built-in and transformers classes."""
from __future__ import annotations

import copy
import json
import logging
import os
import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional, Union

from ..constants import PYTORCH_WEIGHTS_NAME, SAFETENSORS_WEIGHTS_NAME, add_variant
from ..dtypes import DTYPES, FLOAT_SOURCES
from ..engine import devices
from ..engine.fill import fill_parameters
from ..engine.mapped import AUTO, zero_copy_mode
from ..errors import ArchitectureNotSupportedError, CheckpointError, CheckpointNotFoundError

# The record readers, imported here only, under local names (tensors.py may rename them).
from ..formats.checkpoint import (
    checkpoint_records,
    is_tf_checkpoint,
    is_tf_safetensors,
    named_weights_in_folder,
    tf_weights_in_folder,
)
from ..hub.remote_code import AUTO_CLASSES, RemoteCode, TrustCheck, fetch_remote_code
from ..hub.resolve import HubOptions, ShardDownloads, start_pretrained
from ..models.config import CONFIG_CLASSES, config_for_model, config_of_folder
from ..plan import TensorRecord, stored_bytes
from ..tf.checkpoint import TFCheckpoint
from .progress_line import LoadProgress
from .shard_stream import NeedsWholeCheckpoint, ShardStream, ShardTiming

if TYPE_CHECKING:
    import torch

    from ..models.config import PretrainedConfig
    from .load_state import Fill, Source

logger = logging.getLogger(__name__)

BACKENDS = ("auto", "warpload", "transformers")

# transformers options accepted and ignored (the Hub's are popped by hub.HubOptions).
IGNORED_OPTIONS = ("_fast_init", "weights_only", "disable_mmap", "offload_state_dict")
# transformers options warpload does not implement: passing one with a value raises NotImplementedError.
UNSUPPORTED_OPTIONS = ("quantization_config", "gguf_file", "tp_plan", "tp_size", "distributed_config", "device_mesh",
                       "key_mapping", "adapter_kwargs", "adapter_name", "max_memory", "offload_folder",
                       "offload_buffers", "use_kernels", "kernel_config", "load_in_8bit", "load_in_4bit",
                       "fusion_config")
DEVICE_MAP_STRATEGIES = ("auto", "balanced", "balanced_low_0", "sequential")


@dataclass(frozen=True)
class LoadTimings:
    """Seconds from_pretrained spent finding files, planning (config, headers, meta model, keys) and reading;
    with shards still downloading when planning starts, resolve_s ends when config and index are in and
    read_s overlaps the rest of the download."""

    resolve_s: float
    plan_s: float
    read_s: float
    # An overlapped load of a downloading sharded checkpoint: when each shard landed and was loaded.
    shards: tuple[ShardTiming, ...] = ()


def from_pretrained(pretrained_model_name_or_path: Optional[Union[str, "os.PathLike[str]"]], *model_args: Any,
                    model_class: Optional[type] = None, config: Any = None,
                    state_dict: Optional[dict[str, "torch.Tensor"]] = None, dtype: Any = None, torch_dtype: Any = None,
                    device_map: Any = None, output_loading_info: bool = False, ignore_mismatched_sizes: bool = False,
                    low_cpu_mem_usage: Optional[bool] = None, use_safetensors: Optional[bool] = None,
                    variant: Optional[str] = None, subfolder: str = "", generation_config: Any = None,
                    attn_implementation: Optional[str] = None, trust_remote_code: Optional[bool] = None,
                    backend: str = "auto", from_tf: bool = False, from_flax: bool = False,
                    zero_copy: Union[None, bool, str] = None, **kwargs: Any) -> Any:
    """Loads a causal LM from a local checkpoint like transformers 5's from_pretrained.

    The model is built on the meta device. On the CPU, a parameter stored in its final dtype (no
    transpose, bytes aligned to its element size: always in safetensors and zip .bin) views the
    memory-mapped checkpoint, copy-on-write, as transformers 5 gives it; its pages are read and
    mapped in parallel during the call, so the first forward takes no page faults (mapped.py).
    Every other parameter is allocated once, in its final dtype, and the engine copies (and
    converts) the checkpoint's bytes straight into it: no intermediate state dict, peak memory
    near the model's size. zero_copy=None (WARPLOAD_ZERO_COPY, default "auto") maps where
    possible, False always copies, True maps every tensor or raises ZeroCopyError naming the one
    that cannot be. `low_cpu_mem_usage` is accepted and changes nothing: loading is always low-memory.

    backend="auto" uses the built-in class for the config's model_type (GPT-2, Llama, Mistral,
    Qwen2, Qwen3; `model_class` when called as Class.from_pretrained) unless the config or an
    option needs transformers; then transformers' own class is built on meta and filled the same
    way. "warpload" and "transformers" force one.

    Options, as transformers defines them: config (object, or a folder / config.json path),
    state_dict (instead of weight files; no name then), dtype / torch_dtype ("auto", the default,
    takes the config's dtype, else the checkpoint's), device_map ("cpu", a device, an index, or
    {"": device}), output_loading_info (returns (model, info): missing, unexpected and mismatched
    key sets and error messages), ignore_mismatched_sizes, use_safetensors, variant, subfolder,
    generation_config, attn_implementation, trust_remote_code (transformers backend), and config
    overrides as keywords (n_layer=2, rope_theta=...). A repo id is resolved through the Hub cache
    with revision, cache_dir, force_download, local_files_only, token, proxies (see warpload.hub);
    for a local folder those are ignored, as transformers does. With trust_remote_code=True the
    `auto_map` classes come from code_revision (default: the weights' commit; another repo's
    default branch for an "org/repo--module.Class" reference), config.json and weights from
    revision (see warpload.hub.remote_code). A sharded
    safetensors repo is loaded while it downloads: each shard fills its parameters as it lands
    (shard_stream.py). Long loads show one progress line on a terminal (progress.py).
    `model.load_timings` holds the call's LoadTimings. from_tf=True loads TensorFlow weights
    without TensorFlow (tf_checkpoint.py: tf_model.h5 and its shards, TF1 GPT-2 and TF2 bundles);
    safetensors saved by TF models (`format: tf`) are mapped without it, as in transformers.

    Raises CheckpointNotFoundError (an OSError) when no weights or config are found,
    ArchitectureNotSupportedError (a ValueError) when neither warpload nor transformers has the
    class, ShapeMismatchError (a RuntimeError) for mis-shaped tensors, TypeError for unknown
    keywords, ValueError for invalid values, NotImplementedError for what warpload does not
    implement (Flax checkpoints, quantization, GGUF, tensor parallelism, multi-device maps).
    """
    started = time.perf_counter()
    _reject_unsupported(kwargs, from_flax)
    mapping = zero_copy_mode(zero_copy)
    if backend not in BACKENDS:
        raise ValueError(f"backend={backend!r}: choose one of {', '.join(BACKENDS)}")
    for option in IGNORED_OPTIONS:
        kwargs.pop(option, None)
    hub_options = HubOptions.pop_from(kwargs)
    name = None if pretrained_model_name_or_path is None else os.fspath(pretrained_model_name_or_path)
    location = name
    shards: Optional[ShardDownloads] = None
    # Class.from_pretrained builds its own class: only the config may come from remote code then.
    auto_classes = AUTO_CLASSES if model_class is None else AUTO_CLASSES[:1]
    trust = TrustCheck(name or "", trust_remote_code, auto_classes, builtin_model_types=CONFIG_CLASSES)
    if name is not None and state_dict is None:
        location, shards = start_pretrained(name, hub_options, subfolder=subfolder, variant=variant,
                                            use_safetensors=use_safetensors, from_tf=from_tf,
                                            check_config=trust if config is None else None)
    try:
        if state_dict is not None and location is not None:
            raise ValueError("`state_dict` cannot be passed together with a model name or a `gguf_file`. "
                             "Use one of the two loading strategies.")
        remote_code = fetch_remote_code(name, location, hub_options, subfolder=subfolder,
                                        trust_remote_code=trust.trust_remote_code, auto_classes=auto_classes)
        device = _target_device(device_map)
        # Parameters are allocated where they end up when the engine can fill that device directly.
        fill_device = device if devices.fills_directly(device) else "cpu"
        weights = None if state_dict is not None else resolve_weight_files(
            location, subfolder=subfolder, variant=variant, use_safetensors=use_safetensors, from_tf=from_tf)
        stream = _shard_stream(shards, weights, started, mapping)
        tf_weights = None if weights is None or stream is not None else _tf_checkpoint(weights, from_tf)
        resolved = time.perf_counter()

        if config is None and from_tf and location is not None and os.path.isdir(location):
            config = _openai_gpt2_config(os.path.join(location, subfolder))
        model_config, model_kwargs = _load_config(location, config, subfolder, kwargs, model_class)
        builtin, reasons = _builtin_choice(model_config, model_class, attn_implementation)
        if "AutoModelForCausalLM" in remote_code.classes:
            # transformers runs trusted remote code even for a model_type it knows: so does the backend.
            reasons.append("config.json's auto_map names remote code and trust_remote_code=True")
        use_transformers = _use_transformers(backend, reasons)
        class_name = (model_class or builtin or type(model_config)).__name__
        requested = dtype if dtype is not None else torch_dtype
        if stream is not None and requested in (None, "auto") and not (getattr(model_config, "dtype", None)
                                                                        or _index_dtype(weights)):
            stream = None  # the dtype is the first shard's: wait for the download, as below
        folder = os.path.join(location, subfolder) if location is not None and os.path.isdir(location) else None

        def load(stream: Optional[ShardStream],
                 tf_weights: Optional[TFCheckpoint]) -> tuple[Any, Any, float, "torch.dtype"]:
            sources: Union[dict[str, Source], TFCheckpoint]
            if stream is None and shards is not None:
                shards.wait()
            if state_dict is not None:
                sources = dict(state_dict)
            elif tf_weights is not None:
                sources = tf_weights
            elif stream is not None:
                sources = stream.placeholders()
            else:
                sources = {record.name: record for record in checkpoint_records(weights)}
            stored = sources if not isinstance(sources, TFCheckpoint) else {
                tensor.name: tensor for tensor in sources.tensors if isinstance(tensor, TensorRecord)}
            torch_type = resolve_dtype(requested, model_config, weights, stored, class_name)
            fill = stream if stream is not None else fill_parameters
            total = stream.total_bytes if stream is not None else stored_bytes(
                record for record in stored.values() if isinstance(record, TensorRecord))
            with LoadProgress(total):
                if use_transformers:
                    return (*_load_with_transformers(
                        location, config, subfolder, kwargs, model_class, model_args, sources, torch_type,
                        attn_implementation, remote_code, ignore_mismatched_sizes, folder, fill_device,
                        mapping, fill),
                        torch_type)
                return (*_load_builtin(builtin, model_config, model_args, model_kwargs, sources, torch_type,
                                       ignore_mismatched_sizes, folder, fill_device, mapping, fill), torch_type)

        try:
            model, info, planned, torch_type = load(stream, tf_weights)
        except NeedsWholeCheckpoint as reason:
            logger.info("%s: loading after the whole download (%s)", name, reason)
            stream = None
            shards.wait()
            model, info, planned, torch_type = load(None, _tf_checkpoint(weights, from_tf))
    finally:
        if shards is not None:
            shards.close()
    if generation_config is not None:
        model.generation_config = generation_config
    if device.type != "cpu":
        model.to(device)
    model.config.dtype = torch_type
    model.config.name_or_path = name or ""
    model.eval()
    model.load_timings = LoadTimings(resolved - started, planned - resolved, time.perf_counter() - planned,
                                     tuple(stream.timings) if stream is not None else ())
    return (model, info.to_dict()) if output_loading_info else model


def _reject_unsupported(kwargs: dict[str, Any], from_flax: bool) -> None:
    if from_flax:
        raise NotImplementedError("from_flax=True: warpload cannot read Flax checkpoints; convert them to "
                                  "safetensors first")
    for option in UNSUPPORTED_OPTIONS:
        value = kwargs.pop(option, None)
        if value not in (None, False, {}):
            raise NotImplementedError(f"{option}= is not implemented by warpload; call "
                                      "transformers.AutoModelForCausalLM.from_pretrained for it")


def _target_device(device_map: Any) -> "torch.device":
    """The one device a device_map names (transformers' accepted forms); several devices are not supported."""
    import torch

    if device_map is None:
        return torch.device("cpu")
    if isinstance(device_map, dict):
        devices = {str(device) for device in device_map.values()}
        if len(devices) != 1 or "disk" in devices:
            raise NotImplementedError(f"device_map={device_map!r} spreads the model over {sorted(devices)}; "
                                      "warpload places a model on one device: pass {'': device}")
        device_map = next(iter(device_map.values()))
    if isinstance(device_map, str) and device_map in DEVICE_MAP_STRATEGIES:
        raise NotImplementedError(f"device_map={device_map!r} needs an automatic placement plan, which warpload "
                                  "does not compute; pass one device such as 'cpu' or 'cuda:0'")
    if isinstance(device_map, int) and not isinstance(device_map, bool):
        if device_map < 0:
            raise ValueError("You can't pass device_map as a negative int. If you want to put the model on the cpu, "
                             "pass device_map = 'cpu'")
        return torch.device("cuda", device_map)
    try:
        return torch.device(device_map)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"device_map={device_map!r}: when passing device_map as a string, the value needs to be a "
                         "device name (e.g. cpu, cuda:0)") from err


def resolve_weight_files(location: Optional[str], *, subfolder: str = "", variant: Optional[str] = None,
                         use_safetensors: Optional[bool] = None, from_tf: bool = False) -> str:
    """The weights file or shard index transformers would load from a local folder (or the file given).

    Order: with from_tf, TensorFlow weights first (transformers 4: model.ckpt.index, tf_model.h5; then
    warpload's tf_model.h5.index.json and a bundle named by a `checkpoint` file); then model.safetensors,
    its index, then (unless use_safetensors=True) pytorch_model.bin and its index, each with `variant`
    inserted. Raises CheckpointNotFoundError with transformers' messages when none exists, or when the
    location is not on this machine.
    """
    if location is None:
        raise ValueError("pass a checkpoint folder, or state_dict= together with config=")
    if os.path.isfile(location):
        return location
    if not os.path.isdir(location):
        raise CheckpointNotFoundError(
            f"{location} is not a local folder or file; pass a checkpoint folder (repo ids go through "
            "from_pretrained, which downloads them)")
    folder = os.path.join(location, subfolder)
    tf_weights = tf_weights_in_folder(folder)
    if from_tf and tf_weights is not None:
        return tf_weights
    found = named_weights_in_folder(folder, variant=variant, use_safetensors=use_safetensors)
    if found is not None:
        return found
    safetensors_name = add_variant(SAFETENSORS_WEIGHTS_NAME, variant)
    if use_safetensors:
        raise CheckpointNotFoundError(f"Error no file named {safetensors_name} found in directory {location}.")
    hint = ""
    if tf_weights is not None:
        hint = f" It has TensorFlow weights ({os.path.basename(tf_weights)}): use `from_tf=True` to load them."
    bin_name = add_variant(PYTORCH_WEIGHTS_NAME, variant)
    raise CheckpointNotFoundError(
        f"Error no file named {safetensors_name}, or {bin_name}, found in directory {location}.{hint}")


def _tf_checkpoint(weights: str, from_tf: bool) -> Optional[TFCheckpoint]:
    """The TF checkpoint to map, or None for PyTorch weights. Like transformers, safetensors saying
    `format: tf` take the TF path without from_tf; a TF file given without from_tf is refused."""
    from ..tf.checkpoint import read_tf_checkpoint

    if is_tf_safetensors(weights) or (from_tf and is_tf_checkpoint(weights)):
        return read_tf_checkpoint(weights)
    if is_tf_checkpoint(weights):
        raise ValueError(f"We found a TensorFlow checkpoint at {weights}, please set from_tf to True to load from "
                         "this checkpoint.")
    return None


def _openai_gpt2_config(folder: str) -> Optional["PretrainedConfig"]:
    """The GPT-2 config of an OpenAI TF1 release folder (hparams.json, no config.json), else None.
    transformers needs a config.json here; keyword overrides then go to the model, as with config=."""
    from ..tf.checkpoint import openai_gpt2_config

    fields = openai_gpt2_config(folder)
    return None if fields is None else config_for_model("gpt2", **fields)


def _model_sources(sources: Union[dict[str, "Source"], TFCheckpoint], model: Any) -> dict[str, "Source"]:
    """A TF checkpoint is mapped once the model exists: transformers' TF rules need its parameter names and
    shapes (squeezes, base-model prefix; formats.md 5.2-5.3)."""
    if not isinstance(sources, TFCheckpoint):
        return sources
    from ..engine.tf_tensors import tf_sources

    shapes = {name: tuple(parameter.shape) for name, parameter in model.named_parameters()}
    return tf_sources(sources, shapes, model.base_model_prefix)


def _load_config(location: Optional[str], config: Any, subfolder: str, kwargs: dict[str, Any],
                 model_class: Optional[type]) -> tuple["PretrainedConfig", dict[str, Any]]:
    """The warpload config and the keywords left for the model constructor (transformers' split).

    A config object is deep-copied and every keyword goes to the constructor; otherwise keywords
    naming config fields override them. A transformers config object is converted field by field.
    """
    from ..models.config import PretrainedConfig

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


def _builtin_choice(config: "PretrainedConfig", model_class: Optional[type],
                    attn_implementation: Optional[str]) -> tuple[Optional[type], list[str]]:
    """The built-in class for the config and the reasons it cannot serve this call (empty when it can)."""
    from ..models.registry import CAUSAL_LM_CLASSES

    cls = model_class if model_class is not None else CAUSAL_LM_CLASSES.get(config.model_type)
    if cls is None or not isinstance(config, cls.config_class):
        return None, [f"model_type {config.model_type!r} has no built-in implementation"]
    reasons = cls.unsupported_features(config)
    if attn_implementation not in (None, "sdpa"):
        reasons.append(f"attn_implementation={attn_implementation!r} (the built-in models use SDPA)")
    return cls, reasons


def _use_transformers(backend: str, reasons: list[str]) -> bool:
    from ..models.registry import ARCHITECTURES
    from . import transformers_backend

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


def resolve_dtype(requested: Any, config: "PretrainedConfig", weights: Optional[str], sources: dict[str, "Source"],
                  class_name: str) -> "torch.dtype":
    """transformers 5's dtype rule: "auto" (the default) is the config's dtype, else the shard index's
    metadata dtype, else the first floating-point tensor's; strings name torch dtypes."""
    import torch

    if requested is None or requested == "auto":
        requested = getattr(config, "dtype", None) or _index_dtype(weights) or _first_float_dtype(sources)
    if isinstance(requested, str) and isinstance(getattr(torch, requested.removeprefix("torch."), None), torch.dtype):
        requested = getattr(torch, requested.removeprefix("torch."))
    if not isinstance(requested, torch.dtype):
        raise ValueError(f"`dtype` can be one of: `torch.dtype`, `'auto'` or a string of a valid `torch.dtype`, "
                         f"but received {requested}")
    if not requested.is_floating_point:
        raise ValueError(f"Can't instantiate {class_name} model under dtype={requested} since it is not a floating "
                         "point dtype")
    return requested


def _index_dtype(weights: Optional[str]) -> Optional[str]:
    if weights is None or not weights.endswith(".json"):
        return None
    try:
        with open(weights, encoding="utf-8") as handle:
            metadata = json.load(handle).get("metadata") or {}
    except (OSError, ValueError, AttributeError) as err:
        raise CheckpointError(f"{weights}: not a valid shard index ({err!r})", path=weights) from err
    return metadata.get("dtype")


def _first_float_dtype(sources: dict[str, "Source"]) -> Any:
    for source in sources.values():
        if isinstance(source, TensorRecord):
            if source.dtype in FLOAT_SOURCES:
                return DTYPES[source.dtype].torch_name
        elif source.is_floating_point():
            return source.dtype
    return "float32"


def _load_builtin(cls: type, config: "PretrainedConfig", model_args: tuple, model_kwargs: dict[str, Any],
                  sources: dict[str, "Source"], dtype: "torch.dtype", ignore_mismatched_sizes: bool,
                  folder: Optional[str], fill_device: Any = "cpu", zero_copy: str = AUTO,
                  fill: "Fill" = fill_parameters) -> tuple[Any, Any, float]:
    import torch

    from ..models.config import GenerationConfig
    from .load_state import load_builtin

    with torch.device("meta"):
        model = cls(config, *model_args, **model_kwargs)
    sources = _model_sources(sources, model)
    planned = time.perf_counter()
    info = load_builtin(model, sources, dtype, ignore_mismatched_sizes, fill_device, zero_copy, fill)
    report = info.report()
    if report:
        logger.warning("%s load report from %s:\n%s", cls.__name__, folder or "the given state_dict", report)
    if folder is not None and hasattr(model, "generation_config"):
        model.generation_config = GenerationConfig.from_pretrained(folder) or model.generation_config
    return model, info, planned


def _load_with_transformers(location: Optional[str], config: Any, subfolder: str, kwargs: dict[str, Any],
                            model_class: Optional[type], model_args: tuple, sources: dict[str, "Source"],
                            dtype: "torch.dtype", attn_implementation: Optional[str],
                            remote_code: RemoteCode, ignore_mismatched_sizes: bool,
                            folder: Optional[str], fill_device: Any = "cpu",
                            zero_copy: str = AUTO, fill: "Fill" = fill_parameters) -> tuple[Any, Any, float]:
    from . import transformers_backend

    hf_config, model_kwargs = transformers_backend.load_config(location, config, subfolder, kwargs, remote_code)
    if attn_implementation is not None:
        hf_config._attn_implementation = attn_implementation
    model = transformers_backend.build_on_meta(hf_config, dtype, model_args, model_kwargs,
                                               model_class.__name__ if model_class is not None else None,
                                               remote_code)
    sources = _model_sources(sources, model)
    planned = time.perf_counter()
    info = transformers_backend.load(model, sources, dtype, location, ignore_mismatched_sizes, fill_device,
                                     zero_copy, fill)
    transformers_backend.load_generation_config(model, folder)
    return model, info, planned


def _shard_stream(shards: Optional[ShardDownloads], weights: Optional[str], started: float,
                  zero_copy: str) -> Optional[ShardStream]:
    """The stream that loads a sharded safetensors checkpoint while its shards download; None (after
    waiting for the download) for other weights, which need every file before planning."""
    if shards is None:
        return None
    if weights is not None and re.search(r"\.safetensors\.index(\.[^./]+)?\.json$", weights):
        return ShardStream(shards, weights, started, zero_copy)
    shards.wait()
    return None
