"""Checkpoint format readers; importing this package registers every format."""
from .registry import FORMATS, CheckpointContents, Format, detect_format
from . import safetensors  # noqa: F401  (registers itself)

__all__ = ["FORMATS", "CheckpointContents", "Format", "detect_format"]
