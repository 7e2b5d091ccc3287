"""from_pretrained, top to bottom: options -> resolve (Hub, files, remote code) -> build (config, class, meta
model) -> fill (the engine writes the parameters) -> finish, for built-in and transformers classes."""
from __future__ import annotations

import inspect
import logging
import os
import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Optional, Union

from ..engine.fill import fill_parameters
from ..constants import CONFIG_NAME
from ..errors import EntryNotFoundError, UnsafeCheckpointError
from ..formats.checkpoint import checkpoint_records
from ..hub.remote_code import AUTO_CLASSES, RemoteCode, TrustCheck, fetch_remote_code
from ..hub.resolve import ShardDownloads, resolve_pretrained, start_pretrained
from ..models.config import CONFIG_CLASSES
from ..plan import TensorRecord, stored_bytes
from ..tf.checkpoint import TFCheckpoint
from .adapters import Adapter, apply_adapter, find_adapter
from .build import ModelChoice, Sources, build_and_fill, choose_model
from .options import LoadOptions, target_device
from .progress_line import LoadProgress
from .quantized import dequantized_sources, quantization_method, refuse_quantized_config, refuse_quantized_tensors
from .shard_stream import NeedsWholeCheckpoint, ShardStream, ShardTiming
from .weights import index_dtype, resolve_dtype, resolve_weight_files, shard_stream, tf_checkpoint

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)


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
    mapped in parallel during the call, so the first forward takes no page faults (engine/mapped.py).
    Every other parameter is allocated once, in its final dtype, and the engine copies (and
    converts) the checkpoint's bytes straight into it: no intermediate state dict, peak memory
    near the model's size. zero_copy=None (WARPLOAD_ZERO_COPY, default "auto") maps where
    possible, False always copies, True maps every tensor or raises ZeroCopyError naming the one
    that cannot be. `low_cpu_mem_usage` is accepted and changes nothing: loading is always low-memory.

    backend="auto" uses the built-in class for the config's model_type (GPT-2, Llama, Mistral,
    Qwen2, Qwen3; `model_class` when called as Class.from_pretrained) unless the config or an
    option needs transformers; then transformers' own class is built on meta and filled the same
    way. "warpload" and "transformers" force one.

    Options, as transformers defines them: config (object, a folder / config.json path, or a repo id fetched
    with the call's Hub options), state_dict (instead of weight files; no name then), dtype / torch_dtype
    ("auto", the default, takes the config's dtype, else the checkpoint's; a dict gives its "" entry to every
    module, as in transformers 5.24; transformers classes keep their _keep_in_fp32_modules in float32),
    device_map ("cpu", a device, an index, {"": device}; "auto", "balanced", "balanced_low_0", "sequential" or a
    {module: device} dict, with max_memory, offload_folder, offload_buffers: loading/placement.py),
    output_loading_info (returns (model, info):
    missing, unexpected and mismatched key sets and error messages), ignore_mismatched_sizes, use_safetensors,
    variant, subfolder, generation_config, attn_implementation, trust_remote_code (transformers backend),
    disable_mmap=True (zero_copy=False), weights_only (False is accepted: warpload never runs pickled code
    either way), experts_implementation (transformers classes), and config overrides as keywords (n_layer=2,
    rope_theta=...). A repo id is resolved through the Hub cache with revision, cache_dir, force_download,
    local_files_only, token, proxies (see warpload.hub.resolve); for a local folder those are ignored, as
    transformers does. With trust_remote_code=True the `auto_map` classes come from code_revision (default: the
    weights' commit; another repo's default branch for an "org/repo--module.Class" reference), config.json and
    weights from revision (see warpload.hub.remote_code). A sharded safetensors repo is loaded while it
    downloads: each shard fills its parameters as it lands (loading/shard_stream.py). Long loads show one
    progress line on a terminal (loading/progress_line.py). `model.load_timings` holds the call's LoadTimings.
    from_tf=True loads TensorFlow weights without TensorFlow (tf/checkpoint.py: tf_model.h5 and its shards, TF1
    GPT-2 and TF2 bundles); safetensors saved by TF models (`format: tf`) are mapped without it, as in
    transformers. skip_unsupported=True leaves out the TF tensors torch has no dtype for (strings, quantized),
    which otherwise raise UnsupportedDtypeError naming them.

    Raises CheckpointNotFoundError (an OSError) when no weights or config are found, UnsupportedFormatError (a
    ValueError) for a pre-quantized checkpoint (a quantization_config in config.json, or tensors only quantized
    layers store), which warpload does not dequantize yet (loading/quantized.py), ArchitectureNotSupportedError
    (a ValueError) when neither warpload nor transformers has the class, ShapeMismatchError (a RuntimeError) for
    mis-shaped tensors, TypeError for unknown keywords (naming the closest option or config field; one that
    reads like an option before any download), ValueError for invalid values (DeviceMapError for unknown
    devices, budgets, or disk offload without the offload_folder it needs), NotImplementedError for what
    warpload does not implement (Flax checkpoints, quantization, GGUF, tensor parallelism).
    """
    started = time.perf_counter()
    options = LoadOptions.parse(
        pretrained_model_name_or_path, model_args, named=_NAMED_OPTIONS, dtype=dtype, torch_dtype=torch_dtype,
        device_map=device_map, backend=backend, from_flax=from_flax, zero_copy=zero_copy, kwargs=kwargs,
        model_class=model_class, config=config, state_dict=state_dict, output_loading_info=output_loading_info,
        ignore_mismatched_sizes=ignore_mismatched_sizes, use_safetensors=use_safetensors, variant=variant,
        subfolder=subfolder, generation_config=generation_config, attn_implementation=attn_implementation,
        trust_remote_code=trust_remote_code, from_tf=from_tf)
    resolution, adapter = _resolve_model_or_adapter(options, started)
    try:
        choice = choose_model(options, resolution.location, resolution.remote_code)
        refuse_quantized_config(choice.model_config, resolution.location or options.name or "config")
        if resolution.stream is not None and (not _dtype_known_before_shards(options, choice, resolution)
                                              or quantization_method(choice.model_config) is not None
                                              or options.placement is not None):
            # The dtype is the first shard's, scales pair with weights, or disk offload needs each tensor's
            # file: wait for the download.
            resolution.stream = None
        model, info, planned, torch_type = _load_or_wait_for_download(options, resolution, choice)
    finally:
        resolution.close()
    _finish(model, options, torch_type)
    if adapter is not None:
        apply_adapter(model, adapter.folder, options.adapter_name, adapter.config)
    model.load_timings = LoadTimings(resolution.resolved_at - started, planned - resolution.resolved_at,
                                     time.perf_counter() - planned,
                                     tuple(resolution.stream.timings) if resolution.stream is not None else ())
    return (model, info.to_dict()) if output_loading_info else model


# from_pretrained's own parameters: with the options it pops from **kwargs, what a misspelling is checked against.
_NAMED_OPTIONS = tuple(name for name in inspect.signature(from_pretrained).parameters
                       if name not in ("pretrained_model_name_or_path", "model_args", "kwargs"))


def _resolve_model_or_adapter(options: LoadOptions, started: float) -> tuple["Resolution", Optional[Adapter]]:
    """resolve(), after swapping a PEFT adapter for its base model (as transformers does): a local folder with
    adapter_config.json, or a repo id that has no config.json but an adapter_config.json."""
    adapter = None
    if options.name is not None and options.state_dict is None and os.path.isdir(options.name):
        adapter = find_adapter(options.name, options.hub, options.subfolder)
    if adapter is not None:
        options.name = adapter.base_model
    try:
        return resolve(options, started), adapter
    except EntryNotFoundError as err:
        if adapter is not None or options.name is None or not str(err.repo_file or "").endswith(CONFIG_NAME):
            raise
        hub = replace(options.hub, **{key: value for key, value in options.adapter_kwargs.items()
                                      if key in ("revision", "token", "cache_dir", "local_files_only")})
        adapter = find_adapter(options.name, hub, options.subfolder)
        if adapter is None:
            raise
        options.name = adapter.base_model
        return resolve(options, started), adapter


@dataclass
class Resolution:
    """Where a call's files are: the local folder (a Hub snapshot, possibly still downloading shards), the weights
    file or index, remote code, and how the weights are read (streamed shards, a TF checkpoint, or records)."""

    location: Optional[str]
    shards: Optional[ShardDownloads]
    remote_code: RemoteCode
    weights: Optional[str]
    stream: Optional[ShardStream]
    tf_weights: Optional[TFCheckpoint]
    resolved_at: float

    def close(self) -> None:
        if self.shards is not None:
            self.shards.close()


def resolve(options: LoadOptions, started: float) -> Resolution:
    """Starts the Hub download (config first, shards in the background), fetches trusted remote code, and finds
    the weights; sets options.device once the download runs (torch's import overlaps it)."""
    location, shards = options.name, None
    if isinstance(options.config, (str, os.PathLike)):
        # config="org/repo" is fetched with this call's Hub options (token, revision, cache_dir), as transformers does.
        options.config = resolve_pretrained(os.fspath(options.config), options.hub, weights=False)
    # Class.from_pretrained builds its own class: only the config may come from remote code then.
    auto_classes = AUTO_CLASSES if options.model_class is None else AUTO_CLASSES[:1]
    trust = TrustCheck(options.name or "", options.trust_remote_code, auto_classes,
                       builtin_model_types=CONFIG_CLASSES)
    if options.name is not None and options.state_dict is None:
        location, shards = start_pretrained(options.name, options.hub, subfolder=options.subfolder,
                                            variant=options.variant, use_safetensors=options.use_safetensors,
                                            from_tf=options.from_tf,
                                            check_config=trust if options.config is None else None)
    try:
        remote_code = fetch_remote_code(options.name, location, options.hub, subfolder=options.subfolder,
                                        trust_remote_code=trust.trust_remote_code, auto_classes=auto_classes)
        target_device(options)
        weights = None if options.state_dict is not None else resolve_weight_files(
            location, subfolder=options.subfolder, variant=options.variant,
            use_safetensors=options.use_safetensors, from_tf=options.from_tf)
        stream = shard_stream(shards, weights, started, options.zero_copy)
        tf_weights = None if weights is None or stream is not None else tf_checkpoint(
            weights, options.from_tf, options.skip_unsupported)
    except BaseException:
        if shards is not None:
            shards.close()
        raise
    return Resolution(location, shards, remote_code, weights, stream, tf_weights, time.perf_counter())


def _dtype_known_before_shards(options: LoadOptions, choice: ModelChoice, resolution: Resolution) -> bool:
    """Whether the dtype is settled before any shard lands (given, in the config, or in the index metadata)."""
    return options.dtype not in (None, "auto") or bool(getattr(choice.model_config, "dtype", None)
                                                      or index_dtype(resolution.weights))


def _load_or_wait_for_download(options: LoadOptions, resolution: Resolution,
                               choice: ModelChoice) -> tuple[Any, Any, float, "torch.dtype"]:
    """Loads while shards download; a stream that finds it needs the whole checkpoint (NeedsWholeCheckpoint)
    gives way to a load after the download."""
    try:
        return _load(options, resolution, choice, resolution.stream, resolution.tf_weights)
    except UnsafeCheckpointError as err:
        if options.weights_only:
            raise
        raise UnsafeCheckpointError(
            f"{err} from_pretrained(weights_only=False) does not change this: warpload never runs code from a "
            "checkpoint. If you trust the file, load it with transformers.AutoModelForCausalLM.from_pretrained("
            "..., weights_only=False).", path=err.path, tensor=err.tensor, offset=err.offset) from err
    except NeedsWholeCheckpoint as reason:
        logger.info("%s: loading after the whole download (%s)", options.name, reason)
        resolution.stream = None
        resolution.shards.wait()
        tf_weights = tf_checkpoint(resolution.weights, options.from_tf, options.skip_unsupported)
        return _load(options, resolution, choice, None, tf_weights)


def _load(options: LoadOptions, resolution: Resolution, choice: ModelChoice, stream: Optional[ShardStream],
          tf_weights: Optional[TFCheckpoint]) -> tuple[Any, Any, float, "torch.dtype"]:
    """(model, loading info, the time planning ended, its dtype), filled from the sources this call has."""
    if stream is None and resolution.shards is not None:
        resolution.shards.wait()
    sources: Sources
    if options.state_dict is not None:
        sources = dict(options.state_dict)
    elif tf_weights is not None:
        sources = tf_weights
    elif stream is not None:
        sources = stream.placeholders()
    else:
        records = checkpoint_records(resolution.weights, skip_unsupported=options.skip_unsupported)
        sources = {record.name: record for record in records}
    fill = stream if stream is not None else fill_parameters
    sources, fill = dequantized_sources(choice.model_config, sources, fill, resolution.weights or "state_dict")
    stored = sources if not isinstance(sources, TFCheckpoint) else {
        tensor.name: tensor for tensor in sources.tensors if isinstance(tensor, TensorRecord)}
    refuse_quantized_tensors(stored, resolution.weights or "state_dict")
    torch_type = resolve_dtype(options.dtype, choice.model_config, resolution.weights, stored, choice.class_name)
    total = stream.total_bytes if stream is not None else stored_bytes(
        record for record in stored.values() if isinstance(record, TensorRecord))
    with LoadProgress(total):
        model, info, planned = build_and_fill(options, choice, sources, torch_type, fill)
    return model, info, planned, torch_type


def _finish(model: Any, options: LoadOptions, torch_type: "torch.dtype") -> None:
    """What transformers does after filling: generation_config=, the move to the device, eval mode."""
    if options.generation_config is not None:
        model.generation_config = options.generation_config
    if options.device.type != "cpu" and not hasattr(model, "hf_device_map"):  # a spread model is placed already
        model.to(options.device)
    model.config.dtype = torch_type
    model.config.name_or_path = options.name or ""
    model.eval()
