"""TF -> PyTorch: transformers' name and layout rules; each TF fixture loads bit for bit as transformers converts it."""
from __future__ import annotations

import importlib.util

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file

from conftest import FIXTURES, same_bits
from warpload import load_checkpoint
from warpload.errors import CheckpointNotFoundError, UnsupportedFormatError
from warpload.tf.checkpoint import read_tf_checkpoint
from warpload.tf.names import (
    Layout,
    TransposeType,
    convert_tf_weight_name_to_pt_weight_name,
    gpt2_tf1_name,
    object_keys_to_runtime_names,
    start_prefix_to_remove,
    tf_layout,
)

TF = FIXTURES / "tf"
H5_REFERENCE = TF / "pt_gpt2_from_h5" / "model.safetensors"
TF1_REFERENCE = TF / "pt_gpt2model_from_tf1" / "model.safetensors"
needs_h5py = pytest.mark.skipif(importlib.util.find_spec("h5py") is None, reason="h5py is not installed")


# --- convert_tf_weight_name_to_pt_weight_name (formats.md 5.1) -------------------------------------------------

@pytest.mark.parametrize("tf_name, shape, expected", [
    ("tfgpt2lm_head_model/transformer/h_._0/attn/c_attn/weight:0", (64, 192),
     ("transformer.h.0.attn.c_attn.weight", TransposeType.NO)),
    ("tfgpt2lm_head_model/transformer/wte/embeddings:0", (10, 4), ("transformer.wte.weight", TransposeType.NO)),
    ("tf_bert_model/bert/encoder/layer_._3/attention/self/query/kernel:0", (8, 8),
     ("bert.encoder.layer.3.attention.self.query.weight", TransposeType.SIMPLE)),
    ("m/bert/embeddings/LayerNorm/gamma:0", (8,), ("bert.embeddings.LayerNorm.weight", TransposeType.NO)),
    ("m/bert/embeddings/LayerNorm/beta:0", (8,), ("bert.embeddings.LayerNorm.bias", TransposeType.NO)),
    ("m/conv/kernel:0", (3, 3, 4, 8), ("conv.weight", TransposeType.CONV2D)),
    ("m/conv1d/kernel:0", (3, 4, 8), ("conv1d.weight", TransposeType.CONV1D)),
    ("m/sep/pointwise_kernel:0", (1, 4, 8), ("sep.pointwise.weight", TransposeType.SIMPLE)),
    ("m/sep/depthwise_kernel:0", (3, 4, 1), ("sep.depthwise.weight", TransposeType.SIMPLE)),
    ("m/crit/out_projs_._0:0", (4, 8), ("crit.out_projs.0", TransposeType.SIMPLE)),
    ("final_logits_bias:0", (1, 50), ("final_logits_bias", TransposeType.NO)),
    # '$1___$2' between slashes becomes '$2'; non-overlapping matches leave the neighbour alone.
    ("m/a___b/c___d/weight:0", (2,), ("b.c___d.weight", TransposeType.NO)),
    ("m/x___y/z/weight:0", (2,), ("y.z.weight", TransposeType.NO)),
    ("m//double//slash/bias:0", (2,), ("double.slash.bias", TransposeType.NO)),
])
def test_names_follow_transformers(tf_name, shape, expected):
    assert convert_tf_weight_name_to_pt_weight_name(tf_name, tf_weight_shape=shape) == expected


def test_prefix_is_removed_at_its_first_occurrence_anywhere():
    name, _ = convert_tf_weight_name_to_pt_weight_name("m/x/transformer.y/weight:0", start_prefix_to_remove="y.",
                                                       tf_weight_shape=(2,))
    assert name == "x.transformer.weight"
    assert start_prefix_to_remove("transformer", ["h.0.ln_1.weight", "wte.weight"]) == "transformer."
    assert start_prefix_to_remove("transformer", ["transformer.wte.weight", "lm_head.weight"]) == ""


def test_name_scope_is_stripped_or_refused():
    name, _ = convert_tf_weight_name_to_pt_weight_name("scope/m/dense/bias:0", tf_weight_shape=(2,),
                                                       name_scope="scope")
    assert name == "dense.bias"
    with pytest.raises(ValueError, match="name_scope"):
        convert_tf_weight_name_to_pt_weight_name("other/m/dense/bias:0", tf_weight_shape=(2,), name_scope="scope")


# --- apply_transpose as a layout (formats.md 5.2), checked against numpy doing it -------------------------------

@pytest.mark.parametrize("transpose, tf_shape, pt_shape", [
    (TransposeType.SIMPLE, (3, 5), (5, 3)),
    (TransposeType.SIMPLE, (3, 5), None),
    (TransposeType.SIMPLE, (5,), (5,)),
    (TransposeType.CONV2D, (3, 2, 4, 6), (6, 4, 3, 2)),
    (TransposeType.CONV1D, (3, 4, 6), (6, 4, 3)),
    (TransposeType.NO, (1, 7), (7,)),         # GPT-2 TFConv1D bias: squeeze
    (TransposeType.NO, (1, 7), (1, 7)),       # BART final_logits_bias stays [1, n]
    (TransposeType.NO, (7,), (1, 7)),         # expand
    (TransposeType.NO, (6, 2), (3, 4)),       # reshape
    (TransposeType.SIMPLE, (1, 1, 6), (6,)),  # squeeze after transpose
])
def test_layout_matches_numpy_apply_transpose(transpose, tf_shape, pt_shape):
    assert_layout_matches_numpy(transpose, tf_shape, pt_shape)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(1, 4), min_size=1, max_size=4).flatmap(lambda shape: st.tuples(
    st.just(tuple(shape)),
    st.sampled_from([TransposeType.NO, TransposeType.SIMPLE]
                    + ([TransposeType.CONV1D] if len(shape) == 3 else [])
                    + ([TransposeType.CONV2D] if len(shape) == 4 else [])),
    st.sampled_from(["same", "squeezed", "expanded", "flat"]))))
def test_layouts_match_numpy_for_any_shape(case):
    tf_shape, transpose, target = case
    permuted = tf_layout(transpose, tf_shape, None).permutation
    shape = tf_shape if permuted is None else tuple(tf_shape[axis] for axis in permuted)
    pt_shape = {"same": shape, "squeezed": tuple(size for size in shape if size != 1) or (1,),
                "expanded": (1, *shape), "flat": (torch.Size(shape).numel(),)}[target]
    assert_layout_matches_numpy(transpose, tf_shape, pt_shape)


def assert_layout_matches_numpy(transpose, tf_shape, pt_shape):
    """tf_layout applied with torch equals transformers' apply_transpose(pt_to_tf=False) written with numpy."""
    weight = torch.arange(torch.Size(tf_shape).numel()).reshape(tf_shape).numpy()
    expected = weight
    if transpose is TransposeType.CONV2D:
        expected = expected.transpose(3, 2, 0, 1)
    elif transpose is TransposeType.CONV1D:
        expected = expected.transpose(2, 1, 0)
    elif transpose is TransposeType.SIMPLE:
        expected = expected.T
    if pt_shape is not None:
        if len(pt_shape) < expected.ndim:
            expected = expected.squeeze()
        elif len(pt_shape) > expected.ndim:
            expected = expected[None]
        expected = expected.reshape(pt_shape)
    layout = tf_layout(transpose, tf_shape, pt_shape)
    got = torch.from_numpy(weight)
    if layout.permutation is not None:
        got = got.permute(layout.permutation)
    assert torch.equal(got.contiguous().reshape(layout.shape), torch.from_numpy(expected.copy()))


def test_layout_defaults_without_a_target_and_refuses_impossible_shapes():
    assert tf_layout(TransposeType.NO, (1, 192), None) == Layout(None, (192,))
    assert tf_layout(TransposeType.NO, (64, 192), None) == Layout(None, (64, 192))
    with pytest.raises(ValueError, match="cannot reshape"):
        tf_layout(TransposeType.NO, (6, 2), (5, 2))


# --- TF2 object-based keys and OpenAI TF1 names (formats.md 5.4, 5.5) --------------------------------------------

SUFFIX = "/.ATTRIBUTES/VARIABLE_VALUE"


def test_checkpoint_object_keys_keep_the_model_child():
    keys = [f"model/transformer/h/0/attn/c_attn/weight{SUFFIX}", f"model/transformer/wte/embeddings{SUFFIX}",
            f"save_counter{SUFFIX}", "_CHECKPOINTABLE_OBJECT_GRAPH",
            f"model/transformer/wte/embeddings/.OPTIMIZER_SLOT/optimizer/m{SUFFIX}", f"optimizer/iter{SUFFIX}"]
    assert object_keys_to_runtime_names(keys) == {
        keys[0]: "model/transformer/h_._0/attn/c_attn/weight", keys[1]: "model/transformer/wte/embeddings"}


def test_keras_save_weights_keys_get_a_model_level_and_unescaped_names():
    keys = [f"transformer/h/1/ln_1/gamma{SUFFIX}", f"odd..name/.Sslash/kernel{SUFFIX}", f"optimizer/iter{SUFFIX}"]
    assert object_keys_to_runtime_names(keys) == {keys[0]: "model/transformer/h_._1/ln_1/gamma",
                                                  keys[1]: "model/odd.name//slash/kernel"}


@pytest.mark.parametrize("tf_name, expected", [
    ("model/h0/attn/c_attn/w", "h.0.attn.c_attn.weight"),
    ("model/h11/mlp/c_proj/b", "h.11.mlp.c_proj.bias"),
    ("model/h3/ln_1/g", "h.3.ln_1.weight"),
    ("model/wte", "wte.weight"),
    ("model/ln_f/b", "ln_f.bias"),
    ("global_step", None),
])
def test_gpt2_tf1_names(tf_name, expected):
    assert gpt2_tf1_name(tf_name) == expected


# --- fixtures, tensor by tensor against transformers' own conversions --------------------------------------------

H5_FOLDERS = [pytest.param("tf_gpt2_h5", marks=needs_h5py), pytest.param("tf_gpt2_h5/tf_model.h5", marks=needs_h5py),
              pytest.param("tf_gpt2_h5_sharded", marks=needs_h5py),
              pytest.param("tf_gpt2_h5_sharded/tf_model.h5.index.json", marks=needs_h5py),
              "tf_gpt2_safetensors", "tf2_gpt2_checkpoint", "tf2_gpt2_checkpoint/ckpt-1",
              "tf2_gpt2_checkpoint/ckpt-1.data-00000-of-00001", "tf2_gpt2_keras_save_weights"]
TF1_FOLDERS = ["tf1_gpt2_ckpt", "tf1_gpt2_ckpt/model.ckpt", "tf1_gpt2_ckpt/model.ckpt.index", "tf1_gpt2_ckpt_2shards"]


def assert_bit_exact(state, reference):
    assert sorted(state) == sorted(reference)
    for name, tensor in reference.items():
        assert same_bits(state[name], tensor), name


@pytest.mark.parametrize("source", H5_FOLDERS)
def test_keras_checkpoints_equal_transformers_conversion(source):
    assert_bit_exact(load_checkpoint(TF / source, from_tf=True), load_file(H5_REFERENCE))


@pytest.mark.parametrize("source", TF1_FOLDERS)
def test_openai_tf1_checkpoints_equal_transformers_conversion(source):
    assert_bit_exact(load_checkpoint(TF / source, from_tf=True), load_file(TF1_REFERENCE))


@needs_h5py
def test_from_tf_converts_dtype_like_a_pytorch_checkpoint():
    state = load_checkpoint(TF / "tf_gpt2_h5", from_tf=True, dtype=torch.bfloat16)
    reference = load_file(H5_REFERENCE)
    for name, tensor in reference.items():
        assert same_bits(state[name], tensor.to(torch.bfloat16)), name


def test_pytorch_checkpoints_are_not_tf():
    with pytest.raises(UnsupportedFormatError, match="without from_tf=True"):
        load_checkpoint(TF / "pt_gpt2_from_h5", from_tf=True)
    with pytest.raises(CheckpointNotFoundError, match="no TensorFlow checkpoint"):
        load_checkpoint(TF / "pt_gpt2_from_h5_bin", from_tf=True)


def test_tf_safetensors_without_from_tf_are_returned_as_stored():
    state = load_checkpoint(TF / "tf_gpt2_safetensors")
    assert state["transformer/h_._0/attn/c_attn/bias:0"].shape == (1, 192)


@needs_h5py
def test_h5_only_folders_say_to_pass_from_tf():
    with pytest.raises(CheckpointNotFoundError, match="tf_model.h5.*from_tf=True"):
        load_checkpoint(TF / "tf_gpt2_h5")


def test_bundles_without_from_tf_are_returned_as_stored():
    # A tensor bundle is a general tensor container (tf_bundle.py reads it for any TF program); from_tf=True
    # is what maps a model's variables to PyTorch names.
    state = load_checkpoint(TF / "tf1_gpt2_ckpt")
    assert state["model/h0/attn/c_attn/w"].shape == (1, 64, 192)


def test_zero_copy_is_refused_with_from_tf():
    with pytest.raises(ValueError, match="zero_copy"):
        load_checkpoint(TF / "tf_gpt2_safetensors", from_tf=True, zero_copy=True)


@needs_h5py
def test_a_base_model_target_drops_the_main_layer_prefix_as_transformers_does():
    # GPT2Model.from_pretrained(h5, from_tf=True): no PyTorch name starts with `transformer`, so it is removed
    # (load_tf2_state_dict_in_pytorch_model's start_prefix_to_remove), and biases take the model's shapes.
    reference = load_file(H5_REFERENCE)
    base_shapes = {name.removeprefix("transformer."): tuple(tensor.shape) for name, tensor in reference.items()}
    mapped = read_tf_checkpoint(str(TF / "tf_gpt2_h5")).translated(base_shapes, "transformer")
    assert {item.name: item.shape for item in mapped} == base_shapes


def test_tf1_checkpoints_of_other_models_are_refused_by_name():
    with pytest.raises(UnsupportedFormatError, match="GPT-2"):
        load_checkpoint(TF / "bundle_many_keys" / "ckpt", from_tf=True)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 4), min_size=1, max_size=4).flatmap(lambda shape: st.tuples(
    st.just(tuple(shape)),
    st.sampled_from([TransposeType.NO, TransposeType.SIMPLE]
                    + ([TransposeType.CONV1D] if len(shape) == 3 else [])
                    + ([TransposeType.CONV2D] if len(shape) == 4 else [])))))
def test_engine_records_equal_layouts_read_in_torch(case):
    # plain_record hands the engine only layouts that need no data movement beyond a 2-D transpose.
    import tempfile

    from safetensors.torch import save_file

    from warpload import engine
    from warpload.engine.tf_tensors import read_with_layout
    from warpload.formats.safetensors import read_header
    from warpload.plan import plan_load
    from warpload.tf.checkpoint import TranslatedTensor, plain_record

    tf_shape, transpose = case
    with tempfile.TemporaryDirectory() as folder:
        path = f"{folder}/w.safetensors"
        save_file({"w": torch.randn(tf_shape)}, path)
        (record,) = read_header(path).records
        mapped = TranslatedTensor("pt", record, tf_layout(transpose, tf_shape, None))
        expected = read_with_layout(mapped)
        planned = plain_record(mapped)
        if planned is not None:
            assert torch.equal(engine.materialize(plan_load([planned]))["pt"], expected)
        else:
            assert len(mapped.layout.shape) != 2 or mapped.layout.permutation not in (None, (1, 0))
