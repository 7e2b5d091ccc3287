"""warpload.load_checkpoint: single files, folders, sharded indexes written by huggingface_hub, fixtures."""
from __future__ import annotations

import json
import shutil

import pytest
import torch
from huggingface_hub import save_torch_state_dict
from safetensors.torch import load_file as st_load_file
from safetensors.torch import save_file

import warpload
from conftest import FIXTURES, same_bits
from warpload.errors import CheckpointError, CheckpointNotFoundError, HeaderError, UnsupportedFormatError


def reference_state(folder) -> dict[str, torch.Tensor]:
    """Union of every safetensors file in folder, read by safetensors itself."""
    state = {}
    for path in sorted(folder.glob("*.safetensors")):
        state.update(st_load_file(path))
    return state


@pytest.fixture
def sharded(tmp_path):
    state = {f"layer.{i}.weight": torch.randn(64, 33) for i in range(9)}
    state["ids"] = torch.arange(100)
    save_torch_state_dict(state, tmp_path, max_shard_size=40_000)
    assert (tmp_path / "model.safetensors.index.json").exists()
    assert len(list(tmp_path.glob("*.safetensors"))) > 2
    return tmp_path


def test_sharded_folder_equals_union_of_shards(sharded):
    loaded = warpload.load_checkpoint(sharded)
    expected = reference_state(sharded)
    assert set(loaded) == set(expected)
    for name in expected:
        assert same_bits(loaded[name], expected[name]), name


def test_index_path_and_folder_give_the_same_state(sharded):
    by_index = warpload.load_checkpoint(sharded / "model.safetensors.index.json")
    by_folder = warpload.load_checkpoint(str(sharded))
    assert list(by_index) == list(by_folder)
    assert all(torch.equal(by_index[k], by_folder[k]) for k in by_index)


def test_sharded_dtype_converts_floats_only(sharded):
    loaded = warpload.load_checkpoint(sharded, dtype=torch.bfloat16)
    expected = reference_state(sharded)
    assert same_bits(loaded["layer.3.weight"], expected["layer.3.weight"].to(torch.bfloat16))
    assert same_bits(loaded["ids"], expected["ids"])


@pytest.mark.parametrize("fixture", ["pt_gpt2_from_h5", "pt_gpt2_from_h5_sharded", "pt_gpt2model_from_tf1"])
def test_fixture_checkpoints_match_safetensors(fixture):
    folder = FIXTURES / "tf" / fixture
    loaded = warpload.load_checkpoint(folder)
    expected = reference_state(folder)
    assert set(loaded) == set(expected) and expected
    for name in expected:
        assert same_bits(loaded[name], expected[name]), name


def test_single_file_folder_and_file_path(tmp_path):
    save_file({"a": torch.ones(3)}, tmp_path / "model.safetensors")
    assert torch.equal(warpload.load_checkpoint(tmp_path)["a"], torch.ones(3))
    assert torch.equal(warpload.load_checkpoint(tmp_path / "model.safetensors")["a"], torch.ones(3))


def test_format_is_recognised_by_content_not_name(tmp_path):
    save_file({"a": torch.ones(3)}, tmp_path / "weights.data")
    assert torch.equal(warpload.load_checkpoint(tmp_path / "weights.data")["a"], torch.ones(3))


def test_unknown_format_names_the_file_and_the_supported_formats(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("hello, not a checkpoint")
    with pytest.raises(UnsupportedFormatError, match="notes.txt.*safetensors"):
        warpload.load_checkpoint(path)


def test_missing_path_and_empty_folder_raise_not_found(tmp_path):
    with pytest.raises(CheckpointNotFoundError):
        warpload.load_checkpoint(tmp_path / "absent")
    with pytest.raises(CheckpointNotFoundError, match="model.safetensors"):
        warpload.load_checkpoint(tmp_path)


def test_missing_shard_is_named(sharded):
    index = json.loads((sharded / "model.safetensors.index.json").read_text())
    shard = sorted(set(index["weight_map"].values()))[1]
    (sharded / shard).unlink()
    with pytest.raises(CheckpointNotFoundError, match=shard):
        warpload.load_checkpoint(sharded)


def test_index_naming_the_wrong_shard_is_rejected(sharded):
    path = sharded / "model.safetensors.index.json"
    index = json.loads(path.read_text())
    shards = sorted(set(index["weight_map"].values()))
    name = next(k for k, v in index["weight_map"].items() if v == shards[0])
    index["weight_map"][name] = shards[1]
    path.write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match=name):
        warpload.load_checkpoint(sharded)


def test_tensor_in_two_shards_is_rejected(sharded):
    index = json.loads((sharded / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    shutil.copy(sharded / shards[0], sharded / shards[1])
    with pytest.raises(CheckpointError, match="in both"):
        warpload.load_checkpoint(sharded)


@pytest.mark.parametrize("content", ["not json", "[]", '{"weight_map": 3}', '{"weight_map": {"a": "../x"}}'])
def test_malformed_index_is_a_header_error(tmp_path, content):
    (tmp_path / "model.safetensors.index.json").write_text(content)
    with pytest.raises(HeaderError):
        warpload.load_checkpoint(tmp_path)
