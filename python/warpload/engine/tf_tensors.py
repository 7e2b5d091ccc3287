"""TensorFlow checkpoints as torch tensors: plain records read by the engine (2-D transposes while copying),
the other layouts (conv kernels, h5 datasets that are not a byte range) read and permuted in torch."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping, Optional, Union

from ..dtypes import dtype_name, torch_dtype
from ..formats import keras_h5
from ..formats.keras_h5 import H5Dataset
from ..plan import TensorRecord, plan_load, target_dtype
from ..tf.checkpoint import DEFAULT_BASE_MODEL_PREFIX, TFCheckpoint, TranslatedTensor, plain_record, read_tf_checkpoint
from .devices import materialize

if TYPE_CHECKING:
    import torch

# What a parameter is filled from: an engine record, or a tensor already in memory.
Source = Union[TensorRecord, "torch.Tensor"]


def read_with_layout(translated: TranslatedTensor) -> "torch.Tensor":
    """A tensor that is not a plain record: read (engine or h5py), permuted and reshaped, owning its memory."""
    import torch

    stored, layout = translated.stored, translated.layout
    if isinstance(stored, H5Dataset):
        tensor = torch.from_numpy(keras_h5.read_dataset(stored))
    else:
        tensor = materialize(plan_load([stored]))[stored.name]
    if layout.permutation is not None:
        tensor = tensor.permute(layout.permutation)
    return tensor.contiguous().reshape(layout.shape)


def tf_sources(checkpoint: TFCheckpoint, target_shapes: Optional[Mapping[str, tuple[int, ...]]] = None,
               base_model_prefix: str = DEFAULT_BASE_MODEL_PREFIX) -> dict[str, Source]:
    """{PyTorch name: engine record, or tensor when the layout needs materialising}, for from_pretrained."""
    sources: dict[str, Source] = {}
    for translated in checkpoint.translated(target_shapes, base_model_prefix):
        record = plain_record(translated)
        sources[translated.name] = record if record is not None else read_with_layout(translated)
    return sources


def load_tf_checkpoint(path: str, device: Any = "cpu", *, dtype: Optional[str] = None,
                       skip_unsupported: bool = False) -> dict[str, "torch.Tensor"]:
    """load_checkpoint(from_tf=True): a TF checkpoint as a PyTorch-named state dict (GPT-2-style defaults,
    tf/names.py default_shape), plain records read in one parallel engine call."""
    translated = read_tf_checkpoint(path, skip_unsupported=skip_unsupported).translated()
    records = [record for record in map(plain_record, translated) if record is not None]
    tensors = materialize(plan_load(records, dtype), device)
    result = {}
    for item in translated:
        if item.name not in tensors:
            tensor = read_with_layout(item)
            if dtype is not None:
                tensor = tensor.to(torch_dtype(target_dtype(dtype_name(tensor.dtype), dtype)))
            tensors[item.name] = tensor.to(device)
        result[item.name] = tensors[item.name]
    return result
