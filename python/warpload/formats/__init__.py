"""Layer 1, checkpoint format readers: they parse headers into plain TensorRecords and read no tensor bytes.
One module per format, each registering itself when imported (lazily, by registry.detect_format, so a load
imports only the readers it needs). It may import only the base modules (errors, constants, dtypes, plan,
_native)."""
from .registry import CheckpointContents, Format, all_formats, detect_format

__all__ = ["CheckpointContents", "Format", "all_formats", "detect_format"]
