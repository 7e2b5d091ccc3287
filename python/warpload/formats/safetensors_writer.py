"""safetensors writer: the header bytes and data layout safetensors' `serialize` gives for a set of tensors."""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Mapping, Optional, Sequence

from ..constants import SAFETENSORS_MAX_HEADER_BYTES
from ..dtypes import DTYPES
from ..errors import HeaderError
from .safetensors import METADATA_KEY

# safetensors/src/tensor.rs `prepare`: tensors are laid out by descending dtype (the order of `enum Dtype`,
# which is DTYPES' order: increasing alignment), then by name, so every tensor starts aligned to its element.
_DTYPE_RANK = {name: rank for rank, name in enumerate(DTYPES)}
_ALIGNMENT = 8  # the header is padded with spaces to a multiple of 8 bytes (tensor.rs N_LEN)


@dataclass(frozen=True)
class TensorEntry:
    """One tensor to write: its name, safetensors dtype, logical shape (F4 counts values) and byte length."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    nbytes: int


@dataclass(frozen=True)
class FileLayout:
    """Where everything goes: `header` (8-byte length and padded JSON) at 0, entries[i] at file offsets[i]."""

    header: bytes
    entries: tuple[TensorEntry, ...]
    offsets: tuple[int, ...]

    @property
    def total_nbytes(self) -> int:
        return len(self.header) + sum(entry.nbytes for entry in self.entries)


def file_layout(entries: Sequence[TensorEntry], metadata: Optional[Mapping[str, str]] = None) -> FileLayout:
    """The layout safetensors 0.8 writes for these tensors, byte for byte: compact JSON with `__metadata__`
    first (its keys in the mapping's order; safetensors' own order is its HashMap's, so a file with two or more
    metadata keys matches it byte for byte only up to their order), then the tensors in layout order. One
    departure: for no tensors and empty metadata safetensors writes '{},"__metadata__":{}}', which no reader
    loads; this writes '{"__metadata__":{}}'.

    Raises HeaderError (a safetensors.SafetensorError) for a header over safetensors' 100 MB limit."""
    ordered = sorted(entries, key=lambda entry: (-_DTYPE_RANK[entry.dtype], entry.name))
    table: dict[str, object] = {}
    if metadata is not None:
        table[METADATA_KEY] = dict(metadata)
    offsets, position = [], 0
    for entry in ordered:
        table[entry.name] = {"dtype": entry.dtype, "shape": list(entry.shape),
                             "data_offsets": [position, position + entry.nbytes]}
        offsets.append(position)
        position += entry.nbytes
    # serde_json's compact form: no spaces, non-ASCII as UTF-8, control characters as lowercase \u00xx.
    text = json.dumps(table, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text += b" " * (-len(text) % _ALIGNMENT)
    if len(text) > SAFETENSORS_MAX_HEADER_BYTES:
        raise HeaderError(f"the header would be {len(text)} bytes, over safetensors' limit of "
                          f"{SAFETENSORS_MAX_HEADER_BYTES}: save fewer tensors per file, or less metadata")
    header = len(text).to_bytes(8, "little") + text
    return FileLayout(header, tuple(ordered), tuple(len(header) + offset for offset in offsets))
