"""`warpload inspect`: every format's tensors listed with the file bytes that really hold them."""
from __future__ import annotations

import importlib.util
import json

import pytest
import torch
from safetensors.torch import load_file

from conftest import FIXTURES
from warpload.cli import main as cli

TF = FIXTURES / "tf"
H5_REFERENCE = TF / "pt_gpt2_from_h5" / "model.safetensors"
TF1_REFERENCE = TF / "pt_gpt2model_from_tf1" / "model.safetensors"
needs_h5py = pytest.mark.skipif(importlib.util.find_spec("h5py") is None, reason="h5py is not installed")


def inspect_json(capsys, *argv):
    assert cli.main(["inspect", "--json", *argv]) == 0
    return json.loads(capsys.readouterr().out)


def stored_bytes(row) -> bytes:
    with open(row["file"], "rb") as handle:
        handle.seek(row["offset"])
        return handle.read(row["nbytes"])


@pytest.mark.parametrize("source, reference, kind", [
    ("pt_gpt2_from_h5", H5_REFERENCE, "safetensors"),
    ("pt_gpt2_from_h5_sharded", H5_REFERENCE, "sharded"),
    ("pt_gpt2_from_h5_bin", H5_REFERENCE, "pytorch"),
    ("pt_gpt2_from_h5_bin/pytorch_model_legacy.bin", H5_REFERENCE, "pytorch-legacy"),
    ("pt_gpt2_from_h5_bin_sharded", H5_REFERENCE, "sharded"),
    pytest.param("tf_gpt2_h5", H5_REFERENCE, "keras", marks=needs_h5py),
    pytest.param("tf_gpt2_h5_sharded", H5_REFERENCE, "keras-stripped", marks=needs_h5py),
    ("tf_gpt2_safetensors", H5_REFERENCE, "keras-stripped"),
    ("tf2_gpt2_checkpoint", H5_REFERENCE, "tf2-object"),
    ("tf2_gpt2_keras_save_weights", H5_REFERENCE, "tf2-object"),
    ("tf1_gpt2_ckpt", TF1_REFERENCE, "tf1"),
    ("tf1_gpt2_ckpt_2shards/model.ckpt", TF1_REFERENCE, "tf1"),
])
def test_rows_point_at_the_bytes_of_each_tensor(capsys, source, reference, kind):
    listing = inspect_json(capsys, str(TF / source))
    expected = load_file(reference)
    assert listing["format"] == kind
    names = {row["name"] for row in listing["tensors"]}
    assert names - {"lm_head.weight"} == set(expected)  # .bin files keep the tied lm_head
    for row in listing["tensors"]:
        tensor = expected[row["name"] if row["name"] != "lm_head.weight" else "transformer.wte.weight"]
        assert (row["dtype"], tuple(row["shape"]), row["nbytes"]) == ("F32", tuple(tensor.shape), tensor.nbytes)
        assert stored_bytes(row) == tensor.contiguous().view(torch.uint8).numpy().tobytes(), row["name"]
        assert ("tf_name" in row) == kind.startswith(("keras", "tf"))


def test_tf_names_lists_stored_names_and_bundle_entries(capsys):
    listing = inspect_json(capsys, "--tf-names", str(TF / "tf2_gpt2_checkpoint"))
    kinds = {row["name"]: row.get("layout") for row in listing["tensors"]}
    assert kinds["_CHECKPOINTABLE_OBJECT_GRAPH"] == "string"
    assert kinds["save_counter/.ATTRIBUTES/VARIABLE_VALUE"] is None
    assert "model/transformer/h/0/attn/c_attn/weight/.ATTRIBUTES/VARIABLE_VALUE" in kinds


def test_bundles_that_are_not_models_are_listed_as_stored(capsys):
    listing = inspect_json(capsys, str(TF / "bundle_dtypes" / "ckpt"))
    rows = {row["name"]: row for row in listing["tensors"]}
    assert listing["format"] == "tf-bundle"
    assert rows["complex128"]["dtype"] == "C128" and "layout" not in rows["complex128"]
    assert rows["string"]["layout"] == "string"
    assert rows["scalar_f32"]["offset"] == 589 and rows["scalar_f32"]["shape"] == []
    (sliced,) = inspect_json(capsys, str(TF / "bundle_dtypes" / "sliced"))["tensors"]
    assert (sliced["name"], sliced["shape"], sliced["layout"], sliced["offset"]) == ("part", [4, 6], "sliced", None)


@needs_h5py
def test_table_has_tf_columns_and_a_total(capsys):
    assert cli.main(["inspect", str(TF / "tf_gpt2_h5")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["name", "dtype", "shape", "bytes", "file", "offset", "tf_name"]
    assert lines[1].split()[0] == "transformer.wte.weight" and "tf_model.h5" in lines[1]
    assert lines[-1] == "28 tensors, 689,152 bytes (keras)"


def test_unreadable_paths_exit_2_with_the_reason(capsys, tmp_path):
    assert cli.main(["inspect", str(tmp_path / "missing")]) == 2
    assert "missing" in capsys.readouterr().err
    (tmp_path / "junk.bin").write_bytes(b"not a checkpoint at all")
    assert cli.main(["inspect", str(tmp_path / "junk.bin")]) == 2
    assert "not a checkpoint format" in capsys.readouterr().err
