"""Where a checkpoint's tensors are, in one place: a folder resolved to its weights (one order, transformers'),
shard indexes read and checked, TensorFlow files recognised; records only, no bytes."""
from __future__ import annotations

import os
import re
from typing import Optional

from .._fileio import read_shard_index
from ..constants import TF1_CHECKPOINT_INDEX_NAME, TF_H5_INDEX_NAME, TF_H5_WEIGHTS_NAME, weight_file_names
from ..errors import CheckpointError, CheckpointNotFoundError, HeaderError, UnsupportedFormatError
from ..plan import TensorRecord
from .registry import check_unsupported, detect_format, format_for_path
from .safetensors import read_header

# A shard index: model.safetensors.index.json, or with a variant, model.safetensors.index.fp16.json.
INDEX_FILE = re.compile(r"\.index(\.[^./]+)?\.json$")


def checkpoint_records(path: str, *, skip_unsupported: bool = False) -> list[TensorRecord]:
    """The records of a checkpoint: a file of any format, a shard index (variant indexes too), or a folder
    (weights_in_folder). Raises CheckpointNotFoundError when nothing is there, UnsupportedFormatError for a file
    no reader knows (saying from_tf=True for TensorFlow files), CheckpointError for corrupt ones,
    UnsupportedDtypeError naming the tensors torch has no dtype for unless skip_unsupported=True leaves them out."""
    if os.path.isdir(path):
        path = weights_in_folder(path)
    elif not os.path.exists(path) and format_for_path(path) is None:
        raise CheckpointNotFoundError.no_such_file(path)
    if INDEX_FILE.search(path):
        return sharded_records(path, skip_unsupported=skip_unsupported)
    try:
        fmt = detect_format(path)
    except UnsupportedFormatError:
        if is_tf_checkpoint(path):
            raise UnsupportedFormatError(f"{path}: a TensorFlow checkpoint: pass from_tf=True to load it with "
                                         "PyTorch names", path=path) from None
        raise
    contents = fmt.read(path)
    check_unsupported(path, contents.unsupported, skip_unsupported)
    return list(contents.records)


def named_weights_in_folder(folder: str, *, variant: Optional[str] = None,
                            use_safetensors: Optional[bool] = None) -> Optional[str]:
    """The first of transformers' weight file names (constants.weight_file_names) that the folder holds, else None:
    the choice load_checkpoint and from_pretrained share."""
    for name in weight_file_names(variant, use_safetensors):
        candidate = os.path.join(folder, name)
        if os.path.isfile(candidate):
            return candidate
    return None


def weights_in_folder(folder: str, *, variant: Optional[str] = None, use_safetensors: Optional[bool] = None) -> str:
    """The weights of a folder: the first of transformers' names that exists (constants.weight_file_names, the
    order from_pretrained uses too), else the only `*.index.json`, else the only `*.safetensors`, else a
    TensorFlow bundle's prefix. Raises CheckpointNotFoundError naming what the folder holds."""
    named = named_weights_in_folder(folder, variant=variant, use_safetensors=use_safetensors)
    if named is not None:
        return named
    names = sorted(os.listdir(folder))
    for suffix in (".index.json", ".safetensors"):
        matches = [name for name in names if name.endswith(suffix)]
        if len(matches) == 1:
            return os.path.join(folder, matches[0])
    from .tf_bundle import bundle_in_folder  # imported only here: a PyTorch load never loads the TF readers

    bundle = bundle_in_folder(folder)  # TensorFlow: a bundle under any prefix, or an error naming several
    if bundle is not None:
        return bundle
    tf_weights = tf_weights_in_folder(folder)
    hint = (f"; it holds TensorFlow weights ({os.path.basename(tf_weights)}): pass from_tf=True" if tf_weights
            else "; pass the path of the weights file itself")
    raise CheckpointNotFoundError(
        f"{folder}: no {', '.join(weight_file_names(variant, use_safetensors))} "
        f"(found: {', '.join(names) or 'nothing'}){hint}")


def sharded_records(index_path: str, *, skip_unsupported: bool = False) -> list[TensorRecord]:
    """Records of every shard an index names, checked against its weight_map (see checkpoint_records)."""
    weight_map = read_shard_index(index_path).weight_map
    folder = os.path.dirname(index_path)
    records: list[TensorRecord] = []
    owner: dict[str, str] = {}
    for shard in sorted(set(weight_map.values())):
        shard_path = os.path.join(folder, shard)
        if not os.path.isfile(shard_path):
            raise CheckpointNotFoundError(f"{index_path} names shard {shard!r}, which is missing from {folder}")
        contents = detect_format(shard_path).read(shard_path)
        check_unsupported(shard_path, contents.unsupported, skip_unsupported)
        for record in contents.records:
            if record.name in owner:
                raise CheckpointError(
                    f"tensor {record.name!r} is in both {owner[record.name]} and {shard_path}",
                    path=shard_path, tensor=record.name, offset=record.offset,
                )
            owner[record.name] = shard_path
            records.append(record)
    for name, shard in weight_map.items():
        if owner.get(name) != os.path.join(folder, shard):
            raise CheckpointError(
                f"{index_path} maps tensor {name!r} to {shard}, but that shard does not hold it",
                path=os.path.join(folder, shard), tensor=name,
            )
    return records


def tf_weights_in_folder(folder: str) -> Optional[str]:
    """The TF checkpoint in a folder, in transformers 4's from_tf order (model.ckpt.index, then tf_model.h5),
    then warpload's additions: the sharded h5 index, then a bundle under any prefix (tf_bundle.bundle_in_folder:
    the one a TF `checkpoint` file names, the only one, a SavedModel's variables/). None if none; raises
    CheckpointNotFoundError naming the bundles when there are several and nothing says which."""
    for name in (TF1_CHECKPOINT_INDEX_NAME, TF_H5_WEIGHTS_NAME, TF_H5_INDEX_NAME):
        candidate = os.path.join(folder, name)
        if os.path.isfile(candidate):
            return candidate
    from . import tf_bundle

    prefix = tf_bundle.bundle_in_folder(folder)
    return None if prefix is None else prefix + tf_bundle.INDEX_SUFFIX


def is_tf_safetensors(path: str) -> bool:
    """Whether a safetensors file, or the first shard of a safetensors index, says `format: tf` (formats.md 1.6)."""
    if path.endswith(".json"):
        try:
            shards = read_shard_index(path).shards
        except (OSError, HeaderError):
            return False
        if not shards:
            return False
        path = os.path.join(os.path.dirname(path), shards[0])
    try:
        return (read_header(path).metadata or {}).get("format") == "tf"
    except (OSError, HeaderError):
        return False


def is_tf_checkpoint(path: str) -> bool:
    """Whether a file is a TF-only checkpoint warpload maps: Keras h5 (or its index) or a bundle index."""
    if path.endswith(".index.json"):
        return os.path.basename(path).startswith(TF_H5_WEIGHTS_NAME)
    from . import keras_h5, tf_bundle

    if tf_bundle.is_tensor_bundle(path):
        return True
    return os.path.isfile(path) and keras_h5.is_hdf5(path)
