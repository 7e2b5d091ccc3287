"""The format registry: how each format recognises its files and reads their tensor records."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

from ..errors import UnsupportedFormatError
from ..plan import TensorRecord


@dataclass(frozen=True)
class CheckpointContents:
    """What a reader found in one file: tensor records and string metadata (None when absent)."""

    records: tuple[TensorRecord, ...]
    metadata: Optional[dict[str, str]]


@dataclass(frozen=True)
class Format:
    name: str
    sniff: Callable[[bytes, int], bool]  # (first bytes of the file, file size) -> is it mine?
    read: Callable[[str], CheckpointContents]
    # For formats recognised by path rather than first bytes: a TF bundle is a prefix naming several
    # files ('model.ckpt' -> model.ckpt.index + model.ckpt.data-*), and its magic is at the end.
    sniff_path: Optional[Callable[[str], bool]] = None


# Enough leading bytes for every magic number in formats.md section 0.
SNIFF_BYTES = 16

FORMATS: list[Format] = []


def register(fmt: Format) -> None:
    FORMATS.append(fmt)


def detect_format(path: str) -> Format:
    """The format of the file at path, by content (magic numbers), not by name."""
    import os

    found = format_for_path(path)
    if found is not None:
        return found
    with open(path, "rb") as handle:
        head = handle.read(SNIFF_BYTES)
        size = os.fstat(handle.fileno()).st_size
    for fmt in FORMATS:
        if fmt.sniff(head, size):
            return fmt
    names = ", ".join(f.name for f in FORMATS)
    raise UnsupportedFormatError(
        f"{path}: not a checkpoint format warpload reads (first bytes {head[:8].hex(' ')}); "
        f"supported: {names}",
        path=path,
        offset=0,
    )


def format_for_path(path: str) -> Optional[Format]:
    """The format whose sniff_path accepts path (which need not be a file itself), else None."""
    return next((fmt for fmt in FORMATS if fmt.sniff_path is not None and fmt.sniff_path(path)), None)
