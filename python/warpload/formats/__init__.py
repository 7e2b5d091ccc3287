"""Checkpoint format readers; importing this package registers every format."""
from .registry import FORMATS, CheckpointContents, Format, detect_format
from . import safetensors, torchbin, torch_legacy, tf_bundle, keras_h5  # noqa: F401  (each registers itself, in this order)

__all__ = ["FORMATS", "CheckpointContents", "Format", "detect_format"]
