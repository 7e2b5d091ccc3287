"""from_pretrained, top to bottom: options -> resolve (Hub, files, remote code) -> build (config, class, meta
model) -> fill (the engine writes the parameters) -> finish, for built-in and transformers classes."""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional, Union

from ..engine.fill import fill_parameters
from ..formats.checkpoint import checkpoint_records
from ..hub.remote_code import AUTO_CLASSES, RemoteCode, TrustCheck, fetch_remote_code
from ..hub.resolve import ShardDownloads, start_pretrained
from ..models.config import CONFIG_CLASSES
from ..plan import TensorRecord, stored_bytes
from ..tf.checkpoint import TFCheckpoint
from .build import ModelChoice, Sources, build_and_fill, choose_model
from .options import LoadOptions, target_device
from .progress_line import LoadProgress
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

    Options, as transformers defines them: config (object, or a folder / config.json path),
    state_dict (instead of weight files; no name then), dtype / torch_dtype ("auto", the default,
    takes the config's dtype, else the checkpoint's), device_map ("cpu", a device, an index, or
    {"": device}), output_loading_info (returns (model, info): missing, unexpected and mismatched
    key sets and error messages), ignore_mismatched_sizes, use_safetensors, variant, subfolder,
    generation_config, attn_implementation, trust_remote_code (transformers backend), and config
    overrides as keywords (n_layer=2, rope_theta=...). A repo id is resolved through the Hub cache
    with revision, cache_dir, force_download, local_files_only, token, proxies (see warpload.hub.resolve);
    for a local folder those are ignored, as transformers does. With trust_remote_code=True the
    `auto_map` classes come from code_revision (default: the weights' commit; another repo's
    default branch for an "org/repo--module.Class" reference), config.json and weights from
    revision (see warpload.hub.remote_code). A sharded
    safetensors repo is loaded while it downloads: each shard fills its parameters as it lands
    (loading/shard_stream.py). Long loads show one progress line on a terminal (loading/progress_line.py).
    `model.load_timings` holds the call's LoadTimings. from_tf=True loads TensorFlow weights
    without TensorFlow (tf/checkpoint.py: tf_model.h5 and its shards, TF1 GPT-2 and TF2 bundles);
    safetensors saved by TF models (`format: tf`) are mapped without it, as in transformers.
    skip_unsupported=True leaves out the TF tensors torch has no dtype for (strings, quantized), which
    otherwise raise UnsupportedDtypeError naming them.

    Raises CheckpointNotFoundError (an OSError) when no weights or config are found,
    ArchitectureNotSupportedError (a ValueError) when neither warpload nor transformers has the
    class, ShapeMismatchError (a RuntimeError) for mis-shaped tensors, TypeError for unknown
    keywords, ValueError for invalid values, NotImplementedError for what warpload does not
    implement (Flax checkpoints, quantization, GGUF, tensor parallelism, multi-device maps).
    """
    started = time.perf_counter()
    options = LoadOptions.parse(
        pretrained_model_name_or_path, model_args, dtype=dtype, torch_dtype=torch_dtype, device_map=device_map,
        backend=backend, from_flax=from_flax, zero_copy=zero_copy, kwargs=kwargs, model_class=model_class,
        config=config, state_dict=state_dict, output_loading_info=output_loading_info,
        ignore_mismatched_sizes=ignore_mismatched_sizes, use_safetensors=use_safetensors, variant=variant,
        subfolder=subfolder, generation_config=generation_config, attn_implementation=attn_implementation,
        trust_remote_code=trust_remote_code, from_tf=from_tf)
    resolution = resolve(options, started)
    try:
        choice = choose_model(options, resolution.location, resolution.remote_code)
        if resolution.stream is not None and not _dtype_known_before_shards(options, choice, resolution):
            resolution.stream = None  # the dtype is the first shard's: wait for the download
        model, info, planned, torch_type = _load_or_wait_for_download(options, resolution, choice)
    finally:
        resolution.close()
    _finish(model, options, torch_type)
    model.load_timings = LoadTimings(resolution.resolved_at - started, planned - resolution.resolved_at,
                                     time.perf_counter() - planned,
                                     tuple(resolution.stream.timings) if resolution.stream is not None else ())
    return (model, info.to_dict()) if output_loading_info else model


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
        options.device = target_device(options.device_map)
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
    stored = sources if not isinstance(sources, TFCheckpoint) else {
        tensor.name: tensor for tensor in sources.tensors if isinstance(tensor, TensorRecord)}
    torch_type = resolve_dtype(options.dtype, choice.model_config, resolution.weights, stored, choice.class_name)
    total = stream.total_bytes if stream is not None else stored_bytes(
        record for record in stored.values() if isinstance(record, TensorRecord))
    with LoadProgress(total):
        model, info, planned = build_and_fill(options, choice, sources, torch_type,
                                              stream if stream is not None else fill_parameters)
    return model, info, planned, torch_type


def _finish(model: Any, options: LoadOptions, torch_type: "torch.dtype") -> None:
    """What transformers does after filling: generation_config=, the move to the device, eval mode."""
    if options.generation_config is not None:
        model.generation_config = options.generation_config
    if options.device.type != "cpu":
        model.to(options.device)
    model.config.dtype = torch_type
    model.config.name_or_path = options.name or ""
    model.eval()
