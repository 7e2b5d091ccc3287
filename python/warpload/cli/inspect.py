"""`warpload inspect PATH`: lists a checkpoint's tensors (name, dtype, shape, bytes, file, offset), any format."""
from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict, dataclass
from typing import Optional

from ..constants import weight_file_names
from ..dtypes import DTYPES, element_count
from ..errors import UnsupportedDtypeError, UnsupportedFormatError, WarploadError
from ..plan import TensorRecord

BUNDLE_KIND = "tf-bundle"


@dataclass(frozen=True)
class TensorRow:
    """One tensor as `inspect` shows it. offset is None for h5 datasets read through h5py (see `stored`)."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    nbytes: int
    file: str
    offset: Optional[int]
    tf_name: Optional[str] = None  # TF checkpoints: the stored name the PyTorch name comes from
    layout: Optional[str] = None   # TF checkpoints: "transposed", "permuted (3, 2, 0, 1)", "h5py: chunked", ...


def add_parser(subparsers: "argparse._SubParsersAction") -> None:
    """Registers the `inspect` subcommand."""
    parser = subparsers.add_parser(
        "inspect", help="list the tensors of a checkpoint in any supported format",
        description="Lists every tensor of a checkpoint: safetensors, PyTorch .bin, Keras h5, TensorFlow tensor "
                    "bundles; a file, a shard index or a folder. Reads headers only, never tensor data. "
                    "TensorFlow checkpoints are shown under the PyTorch names from_tf=True gives, next to their "
                    "TensorFlow names; TensorFlow itself is not needed.")
    parser.add_argument("path", help="checkpoint file, *.index.json, bundle prefix or folder")
    parser.add_argument("--tf-names", action="store_true",
                        help="TensorFlow checkpoints: list the stored TensorFlow names only, without mapping them")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.set_defaults(command=run)


def run(args: argparse.Namespace) -> int:
    """Runs `warpload inspect`; returns 0, or 2 when the path cannot be read (the reason goes to stderr)."""
    try:
        kind, rows = inspect_checkpoint(args.path, tf_names=args.tf_names)
    except (WarploadError, OSError, ImportError) as err:
        print(f"warpload inspect: {err}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({"path": args.path, "format": kind, "tensors": [_json_row(row) for row in rows]}, indent=1))
    else:
        print(format_table(rows))
        print(f"{len(rows)} tensors, {sum(row.nbytes for row in rows):,} bytes ({kind})")
    return 0


def inspect_checkpoint(path: str, *, tf_names: bool = False) -> tuple[str, list[TensorRow]]:
    """The checkpoint's kind and its tensors, from headers only.

    Raises what the readers raise: CheckpointNotFoundError, CheckpointError, ImportError (h5 without h5py).
    """
    from ..formats import tf_bundle
    from ..tf.checkpoint import read_tf_checkpoint

    bundle = tf_bundle.is_tensor_bundle(path) or (os.path.isdir(path) and _is_tf(path)
                                                  and tf_bundle.bundle_in_folder(path) is not None)
    if bundle and tf_names:
        return BUNDLE_KIND, _bundle_rows(path)
    if _is_tf(path):
        try:
            checkpoint = read_tf_checkpoint(path)
        except (UnsupportedFormatError, UnsupportedDtypeError):
            if not bundle:
                raise
            return BUNDLE_KIND, _bundle_rows(path)  # not a model warpload maps: list the entries as stored
        if tf_names:
            return checkpoint.naming, [_stored_row(tensor) for tensor in checkpoint.tensors]
        return checkpoint.naming, [_translated_row(translated) for translated in checkpoint.translated()]
    from ..formats import detect_format
    from ..formats.checkpoint import checkpoint_records, weights_in_folder

    weights = weights_in_folder(path) if os.path.isdir(path) else path
    kind = "sharded" if weights.endswith(".index.json") else detect_format(weights).name
    return kind, [_record_row(record) for record in checkpoint_records(weights)]


def _is_tf(path: str) -> bool:
    """TF-only files, TF-format safetensors, or a folder whose weights are either."""
    from ..formats.checkpoint import is_tf_checkpoint, is_tf_safetensors, tf_weights_in_folder, weights_in_folder

    if os.path.isdir(path):
        if not any(os.path.isfile(os.path.join(path, name)) for name in weight_file_names(None, None)):
            return tf_weights_in_folder(path) is not None
        path = weights_in_folder(path)
    return is_tf_checkpoint(path) or is_tf_safetensors(path)


def _bundle_rows(path: str) -> list[TensorRow]:
    """Every entry of a tensor bundle's index, strings and unsupported dtypes too (the kind goes in the layout
    column). A partitioned variable is one row: its stored slices have binary keys, not names."""
    from ..formats.tf_bundle import read_bundle_entries

    rows = []
    for entry in read_bundle_entries(path):
        if entry.kind == "slice":
            continue
        nbytes, offset = entry.nbytes, entry.offset
        if entry.kind == "sliced":
            nbytes = element_count(entry.shape) * DTYPES[entry.dtype].bits // 8 if entry.dtype else 0
            offset = None
        rows.append(TensorRow(entry.name, entry.dtype or entry.tf_dtype, entry.shape, nbytes, entry.path, offset,
                              layout=None if entry.kind == "tensor" else entry.kind))
    return rows


def _record_row(record: TensorRecord) -> TensorRow:
    """A record's own bytes: for a view into a larger .bin storage, where the view starts and how much it spans."""
    nbytes = element_count(record.shape) * DTYPES[record.dtype].bits // 8
    offset = record.offset + record.storage_offset * DTYPES[record.dtype].bits // 8
    return TensorRow(record.name, record.dtype, record.shape, nbytes, record.path, offset)


def _stored_row(tensor: object) -> TensorRow:
    if isinstance(tensor, TensorRecord):
        return _record_row(tensor)
    return TensorRow(tensor.name, tensor.dtype, tensor.shape, tensor.nbytes, tensor.path, None,
                     layout=f"h5py: {tensor.reason}")


def _translated_row(translated: object) -> TensorRow:
    stored = _stored_row(translated.stored)
    layout = stored.layout
    if layout is None and translated.layout.permutation is not None:
        layout = "transposed" if translated.layout.is_matrix_transpose else f"permuted {translated.layout.permutation}"
    return TensorRow(translated.name, stored.dtype, translated.shape, stored.nbytes, stored.file, stored.offset,
                     tf_name=stored.name, layout=layout)


def _json_row(row: TensorRow) -> dict:
    fields = asdict(row)
    fields["shape"] = list(row.shape)
    return {key: value for key, value in fields.items() if value is not None or key == "offset"}


def format_table(rows: list[TensorRow]) -> str:
    """A plain-text table; columns for TF names and layouts appear only when some row has them."""
    common = os.path.commonpath([row.file for row in rows]) if rows else ""
    if rows and os.path.isfile(common):
        common = os.path.dirname(common)
    headers = ["name", "dtype", "shape", "bytes", "file", "offset"]
    if any(row.tf_name for row in rows):
        headers.append("tf_name")
    if any(row.layout for row in rows):
        headers.append("layout")
    table = [headers]
    for row in rows:
        cells = [row.name, row.dtype, "[" + ", ".join(map(str, row.shape)) + "]", f"{row.nbytes:,}",
                 os.path.relpath(row.file, common) if common else row.file,
                 "-" if row.offset is None else str(row.offset)]
        if "tf_name" in headers:
            cells.append(row.tf_name or "")
        if "layout" in headers:
            cells.append(row.layout or "")
        table.append(cells)
    widths = [max(len(line[column]) for line in table) for column in range(len(headers))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip() for line in table)
