"""Checkpoint format readers: one module per format, each registering itself when imported (lazily, by
registry.detect_format, so a load imports only the readers it needs)."""
from .registry import CheckpointContents, Format, all_formats, detect_format

__all__ = ["CheckpointContents", "Format", "all_formats", "detect_format"]
