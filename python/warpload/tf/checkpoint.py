"""TensorFlow checkpoints as PyTorch tensors: find the files, read the stored tensors, map names and layouts.

Formats (formats.md sections 4, 5): Keras h5 (tf_model.h5 and its shards), TF-flavoured safetensors
(`__metadata__["format"] == "tf"`), TF1 tensor bundles (OpenAI GPT-2 layout) and TF2 object-based
bundles (tf.train.Checkpoint, Keras save_weights). Reading gives a TFCheckpoint: the stored tensors
under their stored names. Mapping it, with or without the target model's parameter shapes, gives
PyTorch names and layouts; 2-D transposes happen in the engine while copying, other layout changes
(conv kernels, non-plain h5 datasets) are read and permuted in torch (engine/tf_tensors.py).
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, replace
from typing import Mapping, Optional, Union

from .._fileio import read_shard_index
from ..constants import (
    CONFIG_NAME,
    SAFETENSORS_INDEX_NAME,
    SAFETENSORS_WEIGHTS_NAME,
    TF1_CHECKPOINT_INDEX_NAME,
    TF_H5_INDEX_NAME,
    TF_H5_WEIGHTS_NAME,
)
from ..dtypes import DTYPES
from ..errors import CheckpointError, CheckpointNotFoundError, HeaderError, UnsupportedFormatError
from ..formats import keras_h5, tf_bundle
from ..formats.checkpoint import checkpoint_records, is_tf_safetensors, tf_weights_in_folder
from ..formats.keras_h5 import H5Dataset
from ..formats.registry import check_unsupported
from ..plan import TensorRecord
from . import names as tf_names

# Naming schemes of the stored names (see tf/names.py).
KERAS = "keras"                  # full Keras runtime names: tf_model.h5
KERAS_STRIPPED = "keras-stripped"  # without the model-name level: h5 shards, TF safetensors
TF1 = "tf1"                      # TF1 variable names: OpenAI GPT-2 checkpoints
TF2_OBJECT = "tf2-object"        # object-based keys: tf.train.Checkpoint, Keras save_weights

# GPT-2's main layer: the default base-model prefix when no target model is given.
DEFAULT_BASE_MODEL_PREFIX = "transformer"
BUNDLE_DATA_NAME = re.compile(r"\.data-\d{5}-of-\d{5}$")

StoredTensor = Union[TensorRecord, H5Dataset]


@dataclass(frozen=True)
class TranslatedTensor:
    """One stored TF tensor and the PyTorch tensor it becomes."""

    name: str              # PyTorch name
    stored: StoredTensor   # as read, under its stored (TF) name
    layout: tf_names.Layout

    @property
    def shape(self) -> tuple[int, ...]:
        return self.layout.shape


@dataclass(frozen=True)
class TFCheckpoint:
    """The stored tensors of a TF checkpoint (every shard), in file order, and how their names are formed."""

    path: str
    naming: str
    tensors: tuple[StoredTensor, ...]

    def translated(self, target_shapes: Optional[Mapping[str, tuple[int, ...]]] = None,
               base_model_prefix: str = DEFAULT_BASE_MODEL_PREFIX) -> list[TranslatedTensor]:
        """PyTorch names and layouts. With `target_shapes` (the model's state-dict shapes) names and shapes
        follow transformers' load_tf2_state_dict_in_pytorch_model for that model; without, GPT-2-style
        shapes (tf_names.default_shape) and the names as stored, main layer included (Keras:
        `transformer.h.0...`, as GPT2LMHeadModel names them; TF1 GPT-2: `h.0...`, GPT2Model's names).
        Raises CheckpointError when two tensors map to one name or a shape cannot fit."""
        prefix = ""
        if target_shapes is not None:
            prefix = tf_names.start_prefix_to_remove(base_model_prefix, list(target_shapes))
        runtime = self._runtime_names()
        result: list[TranslatedTensor] = []
        seen: dict[str, str] = {}
        for stored in self.tensors:
            if self.naming == TF1:
                name = tf_names.gpt2_tf1_name(stored.name)
                if name is None:
                    continue
                layout = tf_names.Layout(None, tf_names.gpt2_tf1_shape(stored.shape))
            else:
                if stored.name not in runtime:
                    continue
                name, transpose = tf_names.convert_tf_weight_name_to_pt_weight_name(
                    runtime[stored.name], start_prefix_to_remove=prefix, tf_weight_shape=stored.shape)
                target = tf_names.target_shape(name, target_shapes, base_model_prefix)
                try:
                    layout = tf_names.tf_layout(transpose, stored.shape, target)
                except ValueError as err:
                    raise CheckpointError(f"{stored.path}: tensor {stored.name!r} -> {name}: {err}", path=stored.path,
                                          tensor=stored.name) from err
            if name in seen:
                raise CheckpointError(f"{self.path}: TF tensors {seen[name]!r} and {stored.name!r} both map to "
                                      f"PyTorch name {name!r}", path=self.path, tensor=stored.name)
            seen[name] = stored.name
            result.append(TranslatedTensor(name, stored, layout))
        return result

    def _runtime_names(self) -> dict[str, str]:
        names = [stored.name for stored in self.tensors]
        if self.naming == KERAS:
            return {name: name for name in names}
        if self.naming == KERAS_STRIPPED:
            return {name: stripped_to_runtime(name) for name in names}
        if self.naming == TF2_OBJECT:
            try:
                return tf_names.object_keys_to_runtime_names(names)
            except ValueError as err:
                raise UnsupportedFormatError(f"{self.path}: {err}", path=self.path) from err
        return {}


def stripped_to_runtime(name: str) -> str:
    """A shard/safetensors name with a dummy model-name level put back (formats.md 5.4), so that
    convert_tf_weight_name_to_pt_weight_name's dropping of level zero gives transformers' result.
    The writer (strip_model_name_and_prefix) kept `model.`-style names whole."""
    return name if "model." in name else f"model/{name}"


def strip_model_name(name: str) -> str:
    """modeling_tf_utils.strip_model_name_and_prefix: how an h5 shard stores a runtime name (4.2)."""
    if "model." in name or "/" not in name:
        return name
    return name.split("/", 1)[1]


# OpenAI's GPT-2 release: hparams.json beside model.ckpt (openai/gpt-2 src/model.py default_hparams) in
# GPT2Config's terms; its activation, epsilon and dropout are GPT2Config's defaults.
OPENAI_HPARAMS_NAME = "hparams.json"
OPENAI_HPARAMS_TO_GPT2 = {"n_vocab": "vocab_size", "n_ctx": "n_positions", "n_embd": "n_embd", "n_head": "n_head",
                          "n_layer": "n_layer"}


def openai_gpt2_config(folder: str) -> Optional[dict[str, int]]:
    """GPT2Config fields from an OpenAI TF1 release's hparams.json, for a folder that has no config.json;
    None when the folder has a config.json or no hparams.json. Raises HeaderError for a malformed file."""
    path = os.path.join(folder, OPENAI_HPARAMS_NAME)
    if os.path.isfile(os.path.join(folder, CONFIG_NAME)) or not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as handle:
            hparams = json.load(handle)
        fields = {OPENAI_HPARAMS_TO_GPT2[key]: hparams[key] for key in OPENAI_HPARAMS_TO_GPT2}
        if not all(isinstance(value, int) and value > 0 for value in fields.values()):
            raise ValueError("every value must be a positive integer")
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise HeaderError(f"{path}: not an OpenAI GPT-2 hparams.json with {', '.join(OPENAI_HPARAMS_TO_GPT2)} "
                          f"({err!r}); pass config= instead", path=path) from err
    return fields


# --- finding and reading --------------------------------------------------------------------------------------

def read_tf_checkpoint(path: str, *, skip_unsupported: bool = False) -> TFCheckpoint:
    """The stored tensors of the TF checkpoint at path: a folder, a file, a shard index, or a bundle prefix.

    Raises CheckpointNotFoundError when there is none (or a folder holds several bundles), UnsupportedFormatError
    for a file that is not a TF checkpoint (e.g. PyTorch safetensors), UnsupportedDtypeError naming the tensors
    torch has no dtype for (strings, quantized types) unless skip_unsupported=True leaves them out,
    CheckpointError for corrupt files, ImportError without h5py for h5 files.
    """
    if os.path.isdir(path):
        found = tf_weights_in_folder(path)
        if found is None:
            if os.path.isfile(os.path.join(path, SAFETENSORS_INDEX_NAME)):
                found = os.path.join(path, SAFETENSORS_INDEX_NAME)
            elif os.path.isfile(os.path.join(path, SAFETENSORS_WEIGHTS_NAME)):
                found = os.path.join(path, SAFETENSORS_WEIGHTS_NAME)
            else:
                raise CheckpointNotFoundError(
                    f"{path}: no TensorFlow checkpoint ({TF1_CHECKPOINT_INDEX_NAME}, {TF_H5_WEIGHTS_NAME}, "
                    f"{TF_H5_INDEX_NAME}, a bundle's *.index here or in {tf_bundle.SAVED_MODEL_VARIABLES}/, or "
                    f"TF-format {SAFETENSORS_WEIGHTS_NAME}); found: {', '.join(sorted(os.listdir(path))) or 'nothing'}")
        path = found
    if path.endswith(".index.json"):
        if os.path.basename(path).startswith(TF_H5_WEIGHTS_NAME):
            return _read_h5_shards(path, skip_unsupported)
        return _read_tf_safetensors(path)
    data_file = BUNDLE_DATA_NAME.search(path)
    if data_file is not None:
        path = path[:data_file.start()]
    if tf_bundle.is_tensor_bundle(path):
        return _read_bundle(path, skip_unsupported)
    if not os.path.exists(path):
        raise CheckpointNotFoundError(f"{path}: no such file or directory")
    if keras_h5.is_hdf5(path):
        contents = keras_h5.read_keras_h5(path)
        check_unsupported(path, contents.unsupported, skip_unsupported)
        return TFCheckpoint(path, KERAS_STRIPPED if contents.stripped else KERAS, contents.tensors)
    return _read_tf_safetensors(path)


def _read_tf_safetensors(path: str) -> TFCheckpoint:
    if not is_tf_safetensors(path):
        raise UnsupportedFormatError(
            f"{path}: not a TensorFlow checkpoint (a safetensors file must say __metadata__ format 'tf'); load it "
            "without from_tf=True", path=path)
    return TFCheckpoint(path, KERAS_STRIPPED, tuple(checkpoint_records(path)))


def _read_h5_shards(index_path: str, skip_unsupported: bool) -> TFCheckpoint:
    """Every shard an h5 index names; its weight_map keys are runtime names, the shards store them stripped (4.2)."""
    index = read_shard_index(index_path)
    weight_map, shards = index.weight_map, index.shards
    folder = os.path.dirname(index_path)
    tensors: list[StoredTensor] = []
    skipped: set[str] = set()
    for shard in shards:
        shard_path = os.path.join(folder, shard)
        if not os.path.isfile(shard_path):
            raise CheckpointNotFoundError(f"{index_path} names shard {shard!r}, which is missing from {folder}")
        contents = keras_h5.read_keras_h5(shard_path)
        check_unsupported(shard_path, contents.unsupported, skip_unsupported)
        tensors += contents.tensors
        skipped.update(item.name for item in contents.unsupported)
    found = {stored.name for stored in tensors} | skipped
    missing = sorted(name for name in weight_map if strip_model_name(name) not in found)
    if missing or len(found) != len(tensors) + len(skipped):
        problem = f"names {missing[:3]} but no shard holds them" if missing else "holds a tensor name twice"
        raise CheckpointError(f"{index_path}: the index {problem}", path=index_path)
    return TFCheckpoint(index_path, KERAS_STRIPPED, tuple(tensors))


def _read_bundle(path: str, skip_unsupported: bool) -> TFCheckpoint:
    prefix = tf_bundle.bundle_prefix(path)
    records = tuple(tf_bundle.read_tensor_bundle(prefix, skip_unsupported=skip_unsupported))
    naming = TF2_OBJECT if tf_names.is_object_based([record.name for record in records]) else TF1
    if naming == TF1 and not any(tf_names.gpt2_tf1_name(record.name) for record in records):
        raise UnsupportedFormatError(
            f"{prefix}: a TF1 checkpoint whose variables are not in OpenAI GPT-2's `model/` scope; warpload maps "
            "TF1 checkpoints of GPT-2 only (transformers has one load_tf_weights_in_* function per model)",
            path=path)
    return TFCheckpoint(prefix, naming, records)


# --- tensors ------------------------------------------------------------------------------------------------------

def plain_record(translated: TranslatedTensor) -> Optional[TensorRecord]:
    """The translated tensor as an engine record (renamed, reshaped, 2-D transposed while copying), or None
    when its layout needs a real permutation or its data is not a plain byte range."""
    stored, layout = translated.stored, translated.layout
    if not isinstance(stored, TensorRecord):
        return None
    if layout.permutation is None or _moves_only_unit_axes(stored.shape, layout.permutation):
        return replace(stored, name=translated.name, shape=layout.shape)
    # The engine transposes elements of 1, 2, 4 or 8 bytes; complex128 is permuted in torch.
    if (layout.is_matrix_transpose and len(layout.shape) == 2 and layout.shape == stored.shape[::-1]
            and DTYPES[stored.dtype].bits <= 64):
        return replace(stored, name=translated.name, shape=layout.shape, transpose=True)
    return None


def _moves_only_unit_axes(shape: tuple[int, ...], permutation: tuple[int, ...]) -> bool:
    """Whether permuting changes no byte: the axes longer than 1 keep their order."""
    kept = [axis for axis in permutation if shape[axis] != 1]
    return kept == sorted(kept)
