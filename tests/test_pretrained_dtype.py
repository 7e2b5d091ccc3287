"""dtype= as transformers 5.24 resolves it, branch by branch (modeling_utils._get_dtype), and the parameters
transformers keeps in another dtype (_keep_in_fp32_modules, _keep_in_fp32_modules_strict), on both backends."""
from __future__ import annotations

import copy
import json
import logging

import pytest
import torch
import transformers
from safetensors.torch import load_file, save_file

from conftest import same_bits
from model_checkpoints import save_checkpoint, tiny_transformers_model
from warpload import AutoModelForCausalLM


def _without_config_dtype(folder):
    config = json.loads((folder / "config.json").read_text())
    config.pop("dtype", None)
    config.pop("torch_dtype", None)
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def _dtypes_of(model):
    return {name: tensor.dtype for name, tensor in model.state_dict().items()}


def _load_both(folder, **options):
    ours = AutoModelForCausalLM.from_pretrained(folder, **options)
    theirs = transformers.AutoModelForCausalLM.from_pretrained(folder, **options)
    return ours, theirs


@pytest.mark.parametrize("dtypes", [{"": torch.float16}, {"": "bfloat16"}, {"text_config": torch.float16}])
def test_a_dict_gives_its_empty_key_to_every_module(tmp_path, caplog, dtypes):
    folder = save_checkpoint(tiny_transformers_model("llama"), tmp_path)
    with caplog.at_level(logging.WARNING):
        ours, theirs = _load_both(folder, dtype=dtypes)
    assert _dtypes_of(ours) == _dtypes_of(theirs)
    assert ours.config.dtype == theirs.config.dtype
    assert "Using different dtypes per module is deprecated" in caplog.text


def test_auto_takes_the_config_dtype(tmp_path):
    folder = save_checkpoint(tiny_transformers_model("gpt2"), tmp_path, dtype=torch.float32)
    config = json.loads((folder / "config.json").read_text())
    config["dtype"] = "bfloat16"  # the config names another dtype than the stored one: the config wins
    (folder / "config.json").write_text(json.dumps(config))
    ours, theirs = _load_both(folder, dtype="auto")
    assert ours.dtype == theirs.dtype == torch.bfloat16


def test_auto_takes_the_shard_index_metadata_dtype(tmp_path):
    folder = _without_config_dtype(save_checkpoint(tiny_transformers_model("llama"), tmp_path, "safetensors-sharded"))
    index_path = folder / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    index["metadata"]["dtype"] = "float16"
    index_path.write_text(json.dumps(index))
    ours, theirs = _load_both(folder)
    assert ours.dtype == theirs.dtype == torch.float16


@pytest.mark.parametrize("stored", [torch.bfloat16, torch.float16])
def test_auto_takes_the_first_floating_tensor_and_skips_float8(tmp_path, stored):
    folder = _without_config_dtype(save_checkpoint(tiny_transformers_model("llama"), tmp_path, dtype=stored))
    tensors = load_file(folder / "model.safetensors")
    # A float8 tensor first in the file: transformers cannot build a model in float8, and skips it.
    first = sorted(tensors)[0]
    tensors = {"aaa.float8_scale": torch.ones(4, dtype=torch.float8_e4m3fn), **tensors}
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
    ours, theirs = _load_both(folder)
    assert first != "aaa.float8_scale"
    assert ours.dtype == theirs.dtype == stored


def test_auto_with_a_state_dict_takes_its_first_floating_tensor(tmp_path):
    model = tiny_transformers_model("gpt2")
    state = {name: tensor.to(torch.float16) for name, tensor in model.state_dict().items()}
    config = copy.deepcopy(model.config)
    config.dtype = None
    ours = AutoModelForCausalLM.from_pretrained(None, config=config, state_dict=state)
    theirs = transformers.GPT2LMHeadModel.from_pretrained(None, config=config, state_dict=state)
    assert ours.dtype == theirs.dtype == torch.float16


def test_auto_on_integer_only_weights_is_refused_as_transformers_does(tmp_path):
    model = tiny_transformers_model("gpt2")
    folder = _without_config_dtype(save_checkpoint(model, tmp_path))
    tensors = {name: tensor.to(torch.int32) for name, tensor in load_file(folder / "model.safetensors").items()}
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match="not a floating point dtype"):
        AutoModelForCausalLM.from_pretrained(folder)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_keep_in_fp32_modules_on_the_transformers_backend(tmp_path, monkeypatch, dtype):
    config = transformers.GPTNeoXConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                        num_attention_heads=4, vocab_size=128, max_position_embeddings=64)
    torch.manual_seed(0)
    folder = save_checkpoint(transformers.AutoModelForCausalLM.from_config(config), tmp_path)
    model_class = transformers.GPTNeoXForCausalLM
    # Class attributes both loaders read.
    monkeypatch.setattr(model_class, "_keep_in_fp32_modules", ["layers.0.mlp"])
    monkeypatch.setattr(model_class, "_keep_in_fp32_modules_strict", ["embed_out"])
    ours, theirs = _load_both(folder, dtype=dtype)
    assert type(ours) is model_class
    assert _dtypes_of(ours) == _dtypes_of(theirs)
    kept = {name for name, kind in _dtypes_of(ours).items() if kind == torch.float32}
    if dtype == torch.float16:  # transformers 5.24 keeps the fp16 list's modules; its strict list, here, not
        assert kept == {f"gpt_neox.layers.0.mlp.{layer}.{leaf}" for layer in ("dense_h_to_4h", "dense_4h_to_h")
                        for leaf in ("weight", "bias")}
    for name, tensor in theirs.state_dict().items():
        assert same_bits(ours.state_dict()[name], tensor), name
