"""TensorFlow variable names and shapes -> PyTorch parameter names and layouts (no I/O; formats.md section 5).

Three naming schemes reach PyTorch names here:
- Keras runtime names (`tfgpt2lm_head_model/transformer/h_._0/attn/c_attn/weight:0`), as in tf_model.h5:
  transformers' generic rule, `convert_tf_weight_name_to_pt_weight_name` + `apply_transpose`
  (src/transformers/modeling_tf_pytorch_utils.py, v4.49.0; section 5.1-5.3);
- TF2 object-based checkpoint keys (`model/transformer/h/0/.../.ATTRIBUTES/VARIABLE_VALUE`): rewritten
  into Keras runtime names, then the rule above (warpload's extension, section 5.4);
- OpenAI GPT-2 TF1 variables (`model/h0/attn/c_attn/w`): `load_tf_weights_in_gpt2`
  (src/transformers/models/gpt2/modeling_gpt2.py, section 5.5).

A layout says how the stored TF array becomes the PyTorch tensor: an axis permutation, then a shape.
With a target (the model's parameter shapes) the shape follows `apply_transpose`'s rank fix-up
exactly; without one, GPT-2-style defaults apply (see `default_shape`).
"""
from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from typing import Mapping, Optional, Sequence

from ..dtypes import element_count


class TransposeType(enum.Enum):
    """modeling_tf_pytorch_utils.TransposeType: how a TF weight's axes map to PyTorch's."""

    NO = "no"
    SIMPLE = "simple"
    CONV1D = "conv1d"
    CONV2D = "conv2d"


# apply_transpose(pt_to_tf=False): TF [kh, kw, in, out] -> PT [out, in, kh, kw]; TF [k, in, out] -> PT [out, in, k].
_PERMUTATIONS = {TransposeType.CONV2D: (3, 2, 0, 1), TransposeType.CONV1D: (2, 1, 0)}


@dataclass(frozen=True)
class Layout:
    """How a stored TF array becomes the PyTorch tensor: permute its axes (None: keep), then view as `shape`."""

    permutation: Optional[tuple[int, ...]]
    shape: tuple[int, ...]

    @property
    def is_matrix_transpose(self) -> bool:
        return self.permutation == (1, 0)


def convert_tf_weight_name_to_pt_weight_name(tf_name: str, start_prefix_to_remove: str = "",
                                             tf_weight_shape: Optional[Sequence[int]] = None,
                                             name_scope: Optional[str] = None) -> tuple[str, TransposeType]:
    """transformers' function of the same name, step for step (formats.md 5.1): the PyTorch name and transpose kind.

    Raises ValueError when the name does not start with `name_scope`.
    """
    if name_scope is not None:
        if not tf_name.startswith(name_scope):
            raise ValueError(f"weight name {tf_name!r} does not start with name_scope {name_scope!r}")
        tf_name = tf_name[len(name_scope):].lstrip("/")
    tf_name = tf_name.replace(":0", "")  # device ids, every occurrence as transformers does
    tf_name = re.sub(r"/[^/]*___([^/]*)/", r"/\1/", tf_name)  # '$1___$2' -> '$2'
    tf_name = tf_name.replace("_._", "/")  # Keras layer lists: h_._0 -> h/0
    tf_name = re.sub(r"//+", "/", tf_name)
    parts = tf_name.split("/")
    if len(parts) > 1:
        parts = parts[1:]  # level zero is the Keras model's name; single names (BART final_logits_bias) stay
    rank = None if tf_weight_shape is None else len(tf_weight_shape)
    if parts[-1] == "kernel" and rank == 4:
        transpose = TransposeType.CONV2D
    elif parts[-1] == "kernel" and rank == 3:
        transpose = TransposeType.CONV1D
    elif (parts[-1] in ("kernel", "pointwise_kernel", "depthwise_kernel") or "emb_projs" in parts
          or "out_projs" in parts):
        transpose = TransposeType.SIMPLE
    else:
        transpose = TransposeType.NO
    if parts[-1] in ("kernel", "embeddings", "gamma"):
        parts[-1] = "weight"
    if parts[-1] == "beta":
        parts[-1] = "bias"
    if parts[-1] in ("pointwise_kernel", "depthwise_kernel"):
        parts[-1] = parts[-1].replace("_kernel", ".weight")
    name = ".".join(parts)
    if start_prefix_to_remove:
        name = name.replace(start_prefix_to_remove, "", 1)  # first occurrence anywhere, as transformers does
    return name, transpose


def start_prefix_to_remove(base_model_prefix: str, pt_names: Sequence[str]) -> str:
    """load_tf2_state_dict_in_pytorch_model's rule: TF names carry the main layer (`transformer.`); a base
    model's PyTorch names do not, so it is removed when no PyTorch name starts with the prefix."""
    if base_model_prefix and not any(name.startswith(base_model_prefix) for name in pt_names):
        return base_model_prefix + "."
    return ""


def tf_layout(transpose: TransposeType, tf_shape: Sequence[int], pt_shape: Optional[Sequence[int]]) -> Layout:
    """apply_transpose(transpose, weight, match_shape=pt_shape, pt_to_tf=False) as a layout (formats.md 5.2).

    SIMPLE is numpy's `.T` (all axes reversed). Then a lower-rank PyTorch shape squeezes every size-1
    axis, a higher rank adds a leading axis, and any remaining difference is a reshape. Without
    `pt_shape`, `default_shape` stands in. Raises ValueError when the element counts differ.
    """
    tf_shape = tuple(tf_shape)
    if transpose in _PERMUTATIONS:
        permutation: Optional[tuple[int, ...]] = _PERMUTATIONS[transpose]
    elif transpose is TransposeType.SIMPLE and len(tf_shape) > 1:
        permutation = tuple(reversed(range(len(tf_shape))))
    else:
        permutation = None
    shape = tf_shape if permutation is None else tuple(tf_shape[axis] for axis in permutation)
    if pt_shape is None:
        return Layout(permutation, default_shape(shape))
    pt_shape = tuple(pt_shape)
    if len(pt_shape) < len(shape):
        shape = tuple(size for size in shape if size != 1)
    elif len(pt_shape) > len(shape):
        shape = (1, *shape)
    if shape != pt_shape:
        if element_count(shape) != element_count(pt_shape):
            raise ValueError(f"cannot reshape TF shape {list(tf_shape)} into PyTorch shape {list(pt_shape)}")
        shape = pt_shape
    return Layout(permutation, shape)


def default_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    """The PyTorch shape when the target model is unknown (load_checkpoint): GPT-2's TFConv1D biases are
    stored [1, nf] for a PyTorch [nf]; every other shape is kept, since a real [1, n] parameter exists
    (BART's final_logits_bias)."""
    if len(shape) == 2 and shape[0] == 1:
        return shape[1:]
    return shape


# --- TF2 object-based checkpoints (formats.md 5.4) -------------------------------------------------------------

OBJECT_VALUE_SUFFIX = "/.ATTRIBUTES/VARIABLE_VALUE"
OBJECT_GRAPH_KEY = "_CHECKPOINTABLE_OBJECT_GRAPH"
SAVE_COUNTER_KEY = "save_counter" + OBJECT_VALUE_SUFFIX
OPTIMIZER_SLOT_MARKER = "/.OPTIMIZER_SLOT/"
# tf.train.Checkpoint(model=...) stores the model under this child; Keras save_weights stores it at the root.
CHECKPOINT_MODEL_ROOTS = ("model",)
# Keras save_weights of a compiled model also saves the optimizer beside the layers.
KERAS_NON_MODEL_ROOTS = ("optimizer",)


def is_object_based(keys: Sequence[str]) -> bool:
    """Whether bundle keys are TF2 object-based (tf.train.Checkpoint, Keras save_weights) rather than TF1 names."""
    return any(key == OBJECT_GRAPH_KEY or key.endswith(OBJECT_VALUE_SUFFIX) for key in keys)


def _unescape(component: str) -> str:
    # tensorflow/python/checkpoint/trackable_view.py _escape_local_name: "." -> "..", "/" -> ".S".
    return re.sub(r"\.(.)", lambda match: {".": ".", "S": "/"}.get(match.group(1), match.group(0)), component)


def object_keys_to_runtime_names(keys: Sequence[str]) -> dict[str, str]:
    """{bundle key: Keras-style runtime name} for the model variables of an object-based checkpoint.

    A tf.train.Checkpoint (it has save_counter) keeps the model under a child (`model/...`), which
    becomes level zero; a Keras save_weights checkpoint has the model at the root, so a dummy level
    zero is added. List levels `h/0` become `h_._0`. Optimizer slots, save_counter and the object
    graph are left out.
    """
    values = [key for key in keys if key.endswith(OBJECT_VALUE_SUFFIX) and OPTIMIZER_SLOT_MARKER not in key
              and key != SAVE_COUNTER_KEY]
    checkpoint_style = SAVE_COUNTER_KEY in keys
    roots = sorted({key.split("/", 1)[0] for key in values})
    model_roots = [root for root in roots if root in CHECKPOINT_MODEL_ROOTS] or roots
    if checkpoint_style and len(model_roots) > 1:
        raise ValueError(f"the checkpoint holds several objects ({', '.join(roots)}) and none is named "
                         f"{' or '.join(CHECKPOINT_MODEL_ROOTS)}; cannot tell which one is the model")
    names = {}
    for key in values:
        components = key[:-len(OBJECT_VALUE_SUFFIX)].split("/")
        if checkpoint_style and components[0] not in model_roots:
            continue
        if not checkpoint_style:
            if components[0] in KERAS_NON_MODEL_ROOTS:
                continue
            components = ["model", *components]
        merged: list[str] = []
        for component in components:
            if component.isdigit() and merged:
                merged[-1] += f"_._{component}"
            else:
                merged.append(_unescape(component))
        names[key] = "/".join(merged)
    return names


# --- OpenAI GPT-2 TF1 checkpoints (formats.md 5.5) -------------------------------------------------------------

GPT2_TF1_SCOPE = "model/"
_GPT2_TF1_LEAVES = {"w": "weight", "g": "weight", "b": "bias"}


def gpt2_tf1_name(tf_name: str) -> Optional[str]:
    """load_tf_weights_in_gpt2's attribute walk as a name: `model/h0/attn/c_attn/w` -> `h.0.attn.c_attn.weight`.

    These are GPT2Model (base) names. Returns None for variables outside the `model/` scope (global_step,
    optimizer state), which transformers would fail on and warpload leaves out. The TF arrays are
    squeezed (every size-1 axis dropped: [1, nx, nf] -> [nx, nf]); see `gpt2_tf1_shape`.
    """
    if not tf_name.startswith(GPT2_TF1_SCOPE):
        return None
    parts: list[str] = []
    for component in tf_name[len(GPT2_TF1_SCOPE):].split("/"):
        match = re.fullmatch(r"([A-Za-z]+)(\d+)", component)
        if match:
            parts += [match.group(1), match.group(2)]
        elif component in ("wte", "wpe"):
            parts += [component, "weight"]
        else:
            parts.append(_GPT2_TF1_LEAVES.get(component, component))
    return ".".join(parts)


def gpt2_tf1_shape(tf_shape: Sequence[int]) -> tuple[int, ...]:
    """numpy's squeeze(): every size-1 axis removed."""
    return tuple(size for size in tf_shape if size != 1)


def target_shape(name: str, shapes: Optional[Mapping[str, tuple[int, ...]]], base_model_prefix: str = ""
                 ) -> Optional[tuple[int, ...]]:
    """The model's shape for a mapped name, also under the base-model prefix added or removed (as match_keys
    pairs them); None without a target or when the model has no such parameter."""
    if shapes is None:
        return None
    if name in shapes:
        return tuple(shapes[name])
    if base_model_prefix:
        for candidate in (f"{base_model_prefix}.{name}", name.removeprefix(f"{base_model_prefix}.")):
            if candidate in shapes:
                return tuple(shapes[candidate])
    return None
