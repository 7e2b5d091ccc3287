"""load_checkpoint and from_pretrained pick the same weights from the same folder, in transformers' order."""
from __future__ import annotations

import itertools
import os
import shutil
import struct
from pathlib import Path

import pytest
import torch
from huggingface_hub import save_torch_state_dict

import warpload
from warpload.formats.checkpoint import weights_in_folder
from warpload.loading.pretrained import resolve_weight_files

# Each layout holds a different value of "w", so the file a load read is visible in what it returns.
LAYOUTS = {
    "model.safetensors": dict(safe_serialization=True, max_shard_size="1GB"),
    "model.safetensors.index.json": dict(safe_serialization=True, max_shard_size=8),
    "pytorch_model.bin": dict(safe_serialization=False, max_shard_size="1GB"),
    "pytorch_model.bin.index.json": dict(safe_serialization=False, max_shard_size=8),
}
TRANSFORMERS_ORDER = ["model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                      "pytorch_model.bin.index.json"]
SHAPES = [combo for size in range(1, 5) for combo in itertools.combinations(LAYOUTS, size)]


def write_layout(folder, name: str, value: float) -> None:
    """One checkpoint layout in its own subfolder, moved into `folder` (shards and all)."""
    staging = folder / f".{name}"
    staging.mkdir()
    save_torch_state_dict({"w": torch.full((4,), value), "v": torch.ones(3)}, staging, **LAYOUTS[name])
    for path in staging.iterdir():
        path.rename(folder / path.name)
    staging.rmdir()


@pytest.mark.parametrize("names", SHAPES, ids=["+".join(n.split(".", 1)[0][:3] + n.count("index") * "-idx"
                                                         for n in names) for names in SHAPES])
def test_both_entry_points_choose_transformers_first_present_file(tmp_path, names):
    for name in names:
        write_layout(tmp_path, name, float(TRANSFORMERS_ORDER.index(name)))
    expected = min(names, key=TRANSFORMERS_ORDER.index)

    assert os.path.basename(weights_in_folder(os.fspath(tmp_path))) == expected
    assert os.path.basename(resolve_weight_files(os.fspath(tmp_path))) == expected
    loaded = warpload.load_checkpoint(tmp_path)
    assert torch.equal(loaded["w"], torch.full((4,), float(TRANSFORMERS_ORDER.index(expected))))


@pytest.mark.parametrize("index_text", ['[1, 2]', '{"weight_map": ["a"]}', '{"weight_map": {"w": "../x.safetensors"}}',
                                        '{"weight_map": {"w": "a.safetensors"}, "metadata": 3}', "{not json"])
def test_every_entry_point_refuses_a_bad_index_with_one_error(tmp_path, index_text):
    (tmp_path / "config.json").write_text('{"model_type": "gpt2", "n_layer": 1, "n_embd": 8, "n_head": 2}')
    (tmp_path / "model.safetensors.index.json").write_text(index_text)
    with pytest.raises(warpload.errors.HeaderError, match="model.safetensors.index.json"):
        warpload.load_checkpoint(tmp_path)
    with pytest.raises(warpload.errors.HeaderError, match="model.safetensors.index.json"):
        warpload.AutoModelForCausalLM.from_pretrained(tmp_path)


def test_tensorflow_weights_without_from_tf_raise_one_class(tmp_path):
    (tmp_path / "tf_model.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(504))
    (tmp_path / "config.json").write_text('{"model_type": "gpt2", "n_layer": 1, "n_embd": 8, "n_head": 2}')
    with pytest.raises(warpload.errors.UnsupportedFormatError, match="from_tf"):
        warpload.load_checkpoint(tmp_path / "tf_model.h5")
    with pytest.raises(warpload.errors.UnsupportedFormatError, match="from_tf"):
        warpload.AutoModelForCausalLM.from_pretrained(tmp_path / "tf_model.h5", config=tmp_path)


# ---------------------------------------------------------------- TensorFlow bundles under any prefix

TF = Path(__file__).resolve().parent / "fixtures" / "tf"
KERAS_WEIGHTS = TF / "tf2_gpt2_keras_save_weights"  # weights.index + weights.data-00000-of-00001 + checkpoint
WTE = "transformer/wte/embeddings/.ATTRIBUTES/VARIABLE_VALUE"
CONFIG = TF / "pt_gpt2_from_h5"  # the same model's config.json (TF bundles carry none)


def put_bundle(folder: Path, prefix: str, *, marker: float = 0.0) -> None:
    """The Keras save_weights bundle under `prefix` (a path inside folder); its wte[0, 0] set to marker when
    nonzero, so that a load shows which bundle it read (data checksums are not verified by default)."""
    from warpload.formats.tf_bundle import read_tensor_bundle

    target = folder / prefix
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(KERAS_WEIGHTS / "weights.index", f"{target}.index")
    data = bytearray((KERAS_WEIGHTS / "weights.data-00000-of-00001").read_bytes())
    if marker:
        (wte,) = [r for r in read_tensor_bundle(KERAS_WEIGHTS / "weights") if r.name == WTE]
        data[wte.offset:wte.offset + 4] = struct.pack("<f", marker)
    Path(f"{target}.data-00000-of-00001").write_bytes(bytes(data))


def first_embedding(folder: Path) -> tuple[float, float]:
    """wte[0, 0] as load_checkpoint and from_pretrained(from_tf=True) read it from the folder."""
    loaded = warpload.load_checkpoint(folder)[WTE][0, 0].item()
    model = warpload.AutoModelForCausalLM.from_pretrained(folder, from_tf=True, config=CONFIG)
    return loaded, model.transformer.wte.weight[0, 0].item()


ORIGINAL = float(warpload.load_checkpoint(KERAS_WEIGHTS)[WTE][0, 0])


@pytest.mark.parametrize("prefixes, state, expected", [
    (["ckpt"], None, ORIGINAL),                                   # any prefix, no `checkpoint` file
    (["variables/variables"], None, ORIGINAL),                    # a SavedModel folder
    (["ckpt-1", "ckpt-2"], "ckpt-2", 2.5),                        # the `checkpoint` file says which
    (["run/ckpt-1", "run/ckpt-2"], "run/ckpt-1", ORIGINAL),       # ... also in a subfolder
], ids=["any-prefix", "saved-model", "state-file", "state-file-subfolder"])
def test_both_entry_points_find_a_bundle_under_any_prefix(tmp_path, prefixes, state, expected):
    for prefix in prefixes:
        put_bundle(tmp_path, prefix, marker=2.5 if prefix.endswith("2") else 0.0)
    if prefixes == ["variables/variables"]:
        (tmp_path / "saved_model.pb").write_bytes(b"\x08\x01")
    if state is not None:
        (tmp_path / "checkpoint").write_text(f'model_checkpoint_path: "{state}"\n'
                                             f'all_model_checkpoint_paths: "{prefixes[0]}"\n')
    assert first_embedding(tmp_path) == (expected, expected)


def test_two_bundles_and_nothing_saying_which_are_named_and_the_advice_works(tmp_path):
    put_bundle(tmp_path, "ckpt-1")
    put_bundle(tmp_path, "ckpt-2", marker=2.5)
    for load in (lambda: warpload.load_checkpoint(tmp_path), lambda: warpload.load_checkpoint(tmp_path, from_tf=True),
                 lambda: warpload.AutoModelForCausalLM.from_pretrained(tmp_path, from_tf=True, config=CONFIG)):
        with pytest.raises(warpload.errors.CheckpointNotFoundError, match=r"2 TensorFlow checkpoints \(ckpt-1, "
                           r"ckpt-2\).*model_checkpoint_path: \"ckpt-2\".*ckpt-2\.index"):
            load()
    assert warpload.load_checkpoint(tmp_path / "ckpt-1.index")[WTE][0, 0].item() == ORIGINAL
    (tmp_path / "checkpoint").write_text('model_checkpoint_path: "ckpt-2"\n')
    assert first_embedding(tmp_path) == (2.5, 2.5)


def test_transformers_bundle_name_comes_first_and_pytorch_weights_ignore_bundles(tmp_path):
    put_bundle(tmp_path, "model.ckpt")
    put_bundle(tmp_path, "other", marker=2.5)
    assert first_embedding(tmp_path) == (ORIGINAL, ORIGINAL)  # transformers' from_tf file: model.ckpt.index
    pytorch = tmp_path / "pytorch"
    pytorch.mkdir()
    put_bundle(pytorch, "ckpt-1")
    put_bundle(pytorch, "ckpt-2")
    write_layout(pytorch, "model.safetensors", 7.0)
    assert torch.equal(warpload.load_checkpoint(pytorch)["w"], torch.full((4,), 7.0))
    assert os.path.basename(resolve_weight_files(os.fspath(pytorch))) == "model.safetensors"


def test_both_entry_points_name_a_string_tensor_and_skip_unsupported_leaves_it_out(tmp_path):
    """A TF2 bundle with a string variable beside the weights (the object graph is the checkpoint's own metadata
    and never counts): one UnsupportedDtypeError naming it, whose advice works in load_checkpoint and
    from_pretrained alike."""
    from tf_bundle_writer import entry_proto, header_proto, sstable
    from warpload.formats.tf_bundle import TF_DTYPE_NAMES, read_bundle_entries

    put_bundle(tmp_path, "ckpt")
    codes = {name: code for code, name in TF_DTYPE_NAMES.items()}
    items = [(b"", header_proto())]
    for e in read_bundle_entries(tmp_path / "ckpt"):
        items.append((e.name.encode(), entry_proto(codes[e.tf_dtype], e.shape, offset=e.offset, size=e.nbytes,
                                                   crc=e.crc32c)))
    items.append((b"vocab/.ATTRIBUTES/VARIABLE_VALUE", entry_proto(codes["DT_STRING"], [1], size=2, crc=0)))
    (tmp_path / "ckpt.index").write_bytes(sstable(sorted(items)))
    for load in (lambda **kw: warpload.load_checkpoint(tmp_path, **kw),
                 lambda **kw: warpload.load_checkpoint(tmp_path, from_tf=True, **kw),
                 lambda **kw: warpload.AutoModelForCausalLM.from_pretrained(tmp_path, from_tf=True, config=CONFIG,
                                                                            **kw)):
        with pytest.raises(warpload.errors.UnsupportedDtypeError,
                           match=r"1 tensor\(s\).*'vocab/.ATTRIBUTES/VARIABLE_VALUE' \(DT_STRING.*skip_unsupported"):
            load()
        assert load(skip_unsupported=True) is not None
    assert warpload.load_checkpoint(tmp_path, skip_unsupported=True)[WTE][0, 0].item() == ORIGINAL
