"""Which weights a from_pretrained call loads, and in which dtype: files, TF checkpoints, streamed shards."""
from __future__ import annotations

import logging
import os
import re
from typing import TYPE_CHECKING, Any, Optional

from .._fileio import read_shard_index
from ..constants import PYTORCH_WEIGHTS_NAME, SAFETENSORS_WEIGHTS_NAME, add_variant
from ..dtypes import DTYPES, FLOAT_SOURCES
from ..errors import CheckpointNotFoundError, UnsupportedFormatError
from ..formats.checkpoint import is_tf_checkpoint, is_tf_safetensors, named_weights_in_folder, tf_weights_in_folder
from ..hub.resolve import ShardDownloads
from ..plan import TensorRecord
from ..tf.checkpoint import TFCheckpoint
from .shard_stream import ShardStream

logger = logging.getLogger(__name__)

if TYPE_CHECKING:
    import torch

    from ..models.config import PretrainedConfig
    from .load_state import Source


def resolve_weight_files(location: Optional[str], *, subfolder: str = "", variant: Optional[str] = None,
                         use_safetensors: Optional[bool] = None, from_tf: bool = False) -> str:
    """The weights file or shard index transformers would load from a local folder (or the file given).

    Order: with from_tf, TensorFlow weights first (transformers 4: model.ckpt.index, tf_model.h5; then
    warpload's tf_model.h5.index.json and a bundle under any prefix: formats.tf_bundle.bundle_in_folder);
    then model.safetensors, its index, then (unless use_safetensors=True) pytorch_model.bin and its index,
    each with `variant` inserted. Raises CheckpointNotFoundError with transformers' messages when none
    exists, or when the location is not on this machine.
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
    if from_tf:
        tf_weights = tf_weights_in_folder(folder)
        if tf_weights is not None:
            return tf_weights
    found = named_weights_in_folder(folder, variant=variant, use_safetensors=use_safetensors)
    if found is not None:
        return found
    safetensors_name = add_variant(SAFETENSORS_WEIGHTS_NAME, variant)
    if use_safetensors:
        raise CheckpointNotFoundError(f"Error no file named {safetensors_name} found in directory {location}.")
    hint = ""
    tf_weights = None if from_tf else tf_weights_in_folder(folder)
    if tf_weights is not None:
        hint = f" It has TensorFlow weights ({os.path.basename(tf_weights)}): use `from_tf=True` to load them."
    bin_name = add_variant(PYTORCH_WEIGHTS_NAME, variant)
    raise CheckpointNotFoundError(
        f"Error no file named {safetensors_name}, or {bin_name}, found in directory {location}.{hint}")


def tf_checkpoint(weights: str, from_tf: bool, skip_unsupported: bool = False) -> Optional[TFCheckpoint]:
    """The TF checkpoint to map, or None for PyTorch weights. Like transformers, safetensors saying
    `format: tf` take the TF path without from_tf; a TF file given without from_tf is refused.
    skip_unsupported: see read_tf_checkpoint."""
    from ..tf.checkpoint import read_tf_checkpoint

    if is_tf_safetensors(weights) or (from_tf and is_tf_checkpoint(weights)):
        return read_tf_checkpoint(weights, skip_unsupported=skip_unsupported)
    if is_tf_checkpoint(weights):
        # transformers raises ValueError with this text; UnsupportedFormatError is one, and load_checkpoint's class.
        raise UnsupportedFormatError(f"We found a TensorFlow checkpoint at {weights}, please set from_tf to True to "
                                     "load from this checkpoint.", path=weights)
    return None


def shard_stream(shards: Optional[ShardDownloads], weights: Optional[str], started: float,
                  zero_copy: str) -> Optional[ShardStream]:
    """The stream that loads a sharded safetensors checkpoint while its shards download; None (after
    waiting for the download) for other weights, which need every file before planning."""
    if shards is None:
        return None
    if weights is not None and re.search(r"\.safetensors\.index(\.[^./]+)?\.json$", weights):
        return ShardStream(shards, weights, started, zero_copy)
    shards.wait()
    return None


def resolve_dtype(requested: Any, config: "PretrainedConfig", weights: Optional[str], sources: dict[str, "Source"],
                  class_name: str) -> "torch.dtype":
    """transformers 5.24's dtype rule (modeling_utils._get_dtype): "auto" (the default) is the config's dtype,
    else the shard index's metadata dtype, else the first floating-point tensor's (float8 and float4 do not
    count), else the first tensor's; strings name torch dtypes; a dict gives its "" entry to every module (with
    transformers' deprecation warning)."""
    import torch

    if isinstance(requested, dict):
        requested = _dtype_of_every_module(requested)
    if requested is None or requested == "auto":
        requested = getattr(config, "dtype", None) or index_dtype(weights) or _state_dict_dtype(sources)
    if isinstance(requested, str) and isinstance(getattr(torch, requested.removeprefix("torch."), None), torch.dtype):
        requested = getattr(torch, requested.removeprefix("torch."))
    if not isinstance(requested, torch.dtype):
        raise ValueError(f"`dtype` can be one of: `torch.dtype`, `'auto'`, a string of a valid `torch.dtype` or "
                         "a `dict` with valid `dtype` for each sub-config in composite configs, but received "
                         f"{requested}")
    if not requested.is_floating_point:
        raise ValueError(f"Can't instantiate {class_name} model under dtype={requested} since it is not a floating "
                         "point dtype")
    return requested


def _dtype_of_every_module(dtypes: dict[str, Any]) -> Any:
    """The dict's "" entry (torch's default dtype without one), as transformers 5.24 applies it to all modules."""
    import torch

    main = dtypes.get("", torch.get_default_dtype())
    logger.warning("Using different dtypes per module is deprecated and will be removed in future versions "
                   "Setting different dtypes per backbone model might cause device errors downstream, therefore "
                   "setting the dtype=%s for all modules.", main)
    return main


def index_dtype(weights: Optional[str]) -> Optional[str]:
    """The dtype a shard index's metadata names (transformers writes it), else None."""
    if weights is None or not weights.endswith(".json"):
        return None
    return read_shard_index(weights).metadata.get("dtype")


def _state_dict_dtype(sources: dict[str, "Source"]) -> Any:
    """transformers' get_state_dict_dtype of the first checkpoint file: its first floating-point tensor's dtype,
    float8 and float4 excepted (no model can be built in them), else its first tensor's, float32 for none."""
    first = None
    first_file = next((s.path for s in sources.values() if isinstance(s, TensorRecord)), None)
    for source in sources.values():
        if isinstance(source, TensorRecord):
            if source.path != first_file:
                continue
            name = DTYPES[source.dtype].torch_name
            if source.dtype in FLOAT_SOURCES and not source.dtype.startswith("F8"):
                return name
        else:
            name = source.dtype
            if source.is_floating_point() and "float8_" not in str(name) and "float4_" not in str(name):
                return name
        first = name if first is None else first
    return "float32" if first is None else first
