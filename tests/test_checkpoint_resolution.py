"""load_checkpoint and from_pretrained pick the same weights from the same folder, in transformers' order."""
from __future__ import annotations

import itertools
import os

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
