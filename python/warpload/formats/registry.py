"""The format registry: how each format recognises its files and reads their tensor records."""
from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

from ..errors import UnsupportedDtypeError, UnsupportedFormatError
from ..plan import TensorRecord


@dataclass(frozen=True)
class UnsupportedTensor:
    """A stored tensor no torch dtype can hold (a TF string or quantized tensor, an h5 string dataset): readers
    list it here instead of a record, and the caller refuses the file or, with skip_unsupported=True, leaves it
    out."""

    name: str
    dtype: str   # as the file names it: DT_QINT8, |S5, ...
    reason: str  # why torch cannot hold it


@dataclass(frozen=True)
class CheckpointContents:
    """What a reader found in one file: tensor records, string metadata (None when absent) and the tensors that
    have no torch dtype."""

    records: tuple[TensorRecord, ...]
    metadata: Optional[dict[str, str]]
    unsupported: tuple[UnsupportedTensor, ...] = ()


SKIP_UNSUPPORTED_HINT = "pass skip_unsupported=True (load_checkpoint, from_pretrained) to leave them out"


def check_unsupported(path: str, unsupported: Sequence[UnsupportedTensor], skip_unsupported: bool) -> None:
    """Raises one UnsupportedDtypeError naming every tensor of `path` that torch cannot hold (the first ten, and
    how many more), unless skip_unsupported is True or there are none."""
    if skip_unsupported or not unsupported:
        return
    named = ", ".join(f"{item.name!r} ({item.dtype}: {item.reason})" for item in unsupported[:10])
    more = f" and {len(unsupported) - 10} more" if len(unsupported) > 10 else ""
    raise UnsupportedDtypeError(
        f"{path}: {len(unsupported)} tensor(s) have no torch dtype: {named}{more}; load them with TensorFlow, or "
        f"{SKIP_UNSUPPORTED_HINT}")


@dataclass(frozen=True)
class Format:
    name: str
    sniff: Callable[[bytes, int], bool]  # (first bytes of the file, file size) -> is it mine?
    read: Callable[[str], CheckpointContents]
    # For formats recognised by path rather than first bytes: a TF bundle is a prefix naming several
    # files ('model.ckpt' -> model.ckpt.index + model.ckpt.data-*), and its magic is at the end.
    sniff_path: Optional[Callable[[str], bool]] = None
    # For torch.save files: the whole unpickled object (formats/torch_objects.py TorchFile), not only a state dict.
    read_structure: Optional[Callable[[str], Any]] = None


# Enough leading bytes for every magic number in formats.md section 0.
SNIFF_BYTES = 16


@dataclass(frozen=True)
class _FormatModule:
    """A format's module, imported only when a search reaches it (it registers its Format on import).
    `path_suffix`: for formats recognised by path, the suffix their files have ('model.ckpt' is a
    bundle when 'model.ckpt.index' is), so that other paths never import the module."""

    module: str
    name: str
    path_suffix: Optional[str] = None


# Sniffing order. Modules load lazily: a safetensors load imports none of the PyTorch, TensorFlow and
# Keras readers (~15 ms of imports on the first load of a process).
FORMAT_MODULES = (
    _FormatModule("safetensors", "safetensors"),
    _FormatModule("torchbin", "pytorch"),
    _FormatModule("torch_legacy", "pytorch-legacy"),
    _FormatModule("tf_bundle", "tf-bundle", path_suffix=".index"),
    _FormatModule("keras_h5", "keras-h5"),
)

_REGISTERED: dict[str, Format] = {}


def register(fmt: Format) -> None:
    """Called by each format module when it is imported."""
    _REGISTERED[fmt.name] = fmt


def _load(entry: _FormatModule) -> Format:
    if entry.name not in _REGISTERED:
        importlib.import_module(f"{__package__}.{entry.module}")
    return _REGISTERED[entry.name]


def all_formats() -> list[Format]:
    """Every format, in sniffing order (importing all their modules)."""
    return [_load(entry) for entry in FORMAT_MODULES]


def detect_format(path: str) -> Format:
    """The format of the file at path, by content (magic numbers), not by name."""
    found = format_for_path(path)
    if found is not None:
        return found
    with open(path, "rb") as handle:
        head = handle.read(SNIFF_BYTES)
        size = os.fstat(handle.fileno()).st_size
    for entry in FORMAT_MODULES:
        fmt = _load(entry)
        if fmt.sniff(head, size):
            return fmt
    names = ", ".join(entry.name for entry in FORMAT_MODULES)
    raise UnsupportedFormatError(
        f"{path}: not a checkpoint format warpload reads (first bytes {head[:8].hex(' ')}); "
        f"supported: {names}",
        path=path,
        offset=0,
    )


def format_for_path(path: str) -> Optional[Format]:
    """The format whose sniff_path accepts path (which need not be a file itself), else None."""
    for entry in FORMAT_MODULES:
        suffix = entry.path_suffix
        if suffix is None or not (path.endswith(suffix) or os.path.exists(path + suffix)):
            continue
        fmt = _load(entry)
        if fmt.sniff_path is not None and fmt.sniff_path(path):
            return fmt
    return None
