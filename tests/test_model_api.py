"""The model object's transformers API (save_pretrained, counts, embeddings, resizing, checkpointing), Auto classes'
from_config and register, and the config API, each against transformers 5 doing the same."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
import transformers
from model_checkpoints import TINY_CONFIGS, tiny_transformers_model
from safetensors import safe_open

import warpload
from warpload.models import config as configs
from warpload.models.llama import LlamaForCausalLM
from warpload.models.registry import CAUSAL_LM_CLASSES

ARCHS = ("gpt2", "llama")
IDS = torch.tensor([[3, 17, 5, 99, 42, 7]])


def ours_and_theirs(arch, tmp_path, **overrides):
    """A tiny transformers model and warpload's load of its checkpoint (same weights)."""
    theirs = tiny_transformers_model(arch, **overrides)
    theirs.save_pretrained(tmp_path / "source")
    return warpload.AutoModelForCausalLM.from_pretrained(tmp_path / "source"), theirs


def logits(model):
    with torch.no_grad():
        return model(IDS).logits


def files_of(folder):
    return sorted(os.listdir(folder))


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("max_shard_size", ["50GB", "40KB", 30_000])
def test_save_pretrained_writes_what_transformers_writes(arch, max_shard_size, tmp_path):
    ours, _ = ours_and_theirs(arch, tmp_path)
    theirs = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "source")
    ours.save_pretrained(tmp_path / "ours", max_shard_size=max_shard_size)
    theirs.save_pretrained(tmp_path / "theirs", max_shard_size=max_shard_size)
    assert files_of(tmp_path / "ours") == files_of(tmp_path / "theirs")
    for name in files_of(tmp_path / "theirs"):
        if name.endswith(".json"):
            assert json.loads((tmp_path / "ours" / name).read_text()) == json.loads(
                (tmp_path / "theirs" / name).read_text()), name
        else:
            with safe_open(tmp_path / "ours" / name, "pt") as mine, safe_open(tmp_path / "theirs" / name, "pt") as ref:
                assert mine.metadata() == ref.metadata() == {"format": "pt"}
                assert sorted(mine.keys()) == sorted(ref.keys())
                for key in ref.keys():
                    assert torch.equal(mine.get_tensor(key), ref.get_tensor(key)), key
    if max_shard_size != "50GB":
        assert (tmp_path / "ours" / "model.safetensors.index.json").exists()
    expected = logits(theirs)
    assert torch.equal(logits(transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "ours")), expected)
    assert torch.equal(logits(warpload.AutoModelForCausalLM.from_pretrained(tmp_path / "ours")), expected)


@pytest.mark.parametrize("arch", ARCHS)
def test_from_config_models_shard_as_transformers(arch, tmp_path):
    class_name, fields = TINY_CONFIGS[arch]
    reference_config = getattr(transformers, class_name)(**fields)
    ours = warpload.AutoModelForCausalLM.from_config(warpload.AutoConfig.for_model(**reference_config.to_dict()))
    ours.save_pretrained(tmp_path / "ours", max_shard_size="40KB")
    transformers.AutoModelForCausalLM.from_config(reference_config).save_pretrained(tmp_path / "theirs",
                                                                                  max_shard_size="40KB")
    assert files_of(tmp_path / "ours") == files_of(tmp_path / "theirs")
    for name in ("config.json", "model.safetensors.index.json"):
        ours_json, theirs_json = (json.loads((tmp_path / side / name).read_text()) for side in ("ours", "theirs"))
        assert ours_json == theirs_json, name


def test_tied_lm_head_is_saved_once_under_the_input_embedding_name(tmp_path):
    ours, _ = ours_and_theirs("gpt2", tmp_path)
    ours.save_pretrained(tmp_path / "ours")
    with safe_open(tmp_path / "ours" / "model.safetensors", "pt") as saved:
        assert "transformer.wte.weight" in saved.keys() and "lm_head.weight" not in saved.keys()


@pytest.mark.parametrize("max_shard_size", ["50GB", "40KB"])
def test_bin_variant_loads_in_transformers_and_warpload(max_shard_size, tmp_path):
    ours, theirs = ours_and_theirs("gpt2", tmp_path)
    ours.save_pretrained(tmp_path / "ours", safe_serialization=False, variant="v1", max_shard_size=max_shard_size)
    names = files_of(tmp_path / "ours")
    if max_shard_size == "50GB":
        assert "pytorch_model.v1.bin" in names
    else:
        shards = [name for name in names if name.startswith("pytorch_model.v1-")]
        assert "pytorch_model.bin.index.v1.json" in names and len(shards) > 1
        assert shards[0] == f"pytorch_model.v1-00001-of-{len(shards):05d}.bin"
    state = torch.load(tmp_path / "ours" / names[-1], weights_only=True)
    assert all(isinstance(tensor, torch.Tensor) for tensor in state.values())
    expected = logits(theirs)
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "ours", variant="v1",
                                                                 use_safetensors=False)
    assert torch.equal(logits(reloaded), expected)
    assert torch.equal(logits(warpload.AutoModelForCausalLM.from_pretrained(tmp_path / "ours", variant="v1")),
                       expected)


def test_save_options_state_dict_main_process_and_push_to_hub(tmp_path):
    ours, _ = ours_and_theirs("llama", tmp_path)
    ours.save_pretrained(tmp_path / "secondary", is_main_process=False)
    assert files_of(tmp_path / "secondary") == []
    partial = {key: value for key, value in ours.state_dict().items() if not key.startswith("lm_head")}
    ours.save_pretrained(tmp_path / "partial", state_dict=partial)
    with safe_open(tmp_path / "partial" / "model.safetensors", "pt") as saved:
        assert sorted(saved.keys()) == sorted(partial)
    with pytest.raises(NotImplementedError, match="upload_folder"):
        ours.save_pretrained(tmp_path / "hub", push_to_hub=True)
    assert not (tmp_path / "hub").exists()
    with pytest.raises(TypeError, match="not_an_option"):
        ours.save_pretrained(tmp_path / "bad", not_an_option=1)


def test_save_pretrained_of_a_builtin_model_never_imports_transformers(tmp_path):
    script = (
        "import sys, torch, warpload\n"
        "from warpload.models.config import LlamaConfig\n"
        "config = LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,"
        " vocab_size=64)\n"
        "model = warpload.AutoModelForCausalLM.from_config(config)\n"
        f"model.save_pretrained({str(tmp_path)!r}, max_shard_size='20KB')\n"
        "assert 'transformers' not in sys.modules, 'transformers was imported'\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True)
    assert "model.safetensors.index.json" in files_of(tmp_path)


@pytest.mark.parametrize("arch", ARCHS)
def test_parameter_counts_and_memory_footprint_match_transformers(arch, tmp_path):
    ours, theirs = ours_and_theirs(arch, tmp_path)
    for model in (ours, theirs):
        model.get_input_embeddings().weight.requires_grad_(False)
        list(model.parameters())[-1].requires_grad_(False)
    for only_trainable in (False, True):
        for exclude_embeddings in (False, True):
            assert ours.num_parameters(only_trainable, exclude_embeddings) == theirs.num_parameters(
                only_trainable, exclude_embeddings), (only_trainable, exclude_embeddings)
    for return_buffers in (True, False):
        assert ours.get_memory_footprint(return_buffers) == theirs.get_memory_footprint(return_buffers)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize(("new_num_tokens", "pad_to_multiple_of"), [(150, None), (150, 64), (None, 96), (100, None)])
def test_resize_token_embeddings_matches_transformers(arch, new_num_tokens, pad_to_multiple_of, tmp_path):
    ours, theirs = ours_and_theirs(arch, tmp_path)
    old = theirs.get_input_embeddings().weight.detach().clone()
    torch.manual_seed(1)
    expected = theirs.resize_token_embeddings(new_num_tokens, pad_to_multiple_of=pad_to_multiple_of)
    torch.manual_seed(1)
    got = ours.resize_token_embeddings(new_num_tokens, pad_to_multiple_of=pad_to_multiple_of)
    assert got.weight.shape == expected.weight.shape and got.num_embeddings == expected.num_embeddings
    assert ours.config.vocab_size == theirs.config.vocab_size == expected.weight.shape[0]
    kept = min(old.shape[0], got.weight.shape[0])
    assert torch.equal(got.weight[:kept], old[:kept])
    # mean_resizing: the added rows come from a normal around the old rows' mean with 1e-9 x their covariance,
    # drawn from the generator as transformers draws them.
    assert torch.equal(got.weight, expected.weight)
    assert torch.equal(ours.get_output_embeddings().weight, theirs.get_output_embeddings().weight)
    assert ours.get_output_embeddings().weight.shape == theirs.get_output_embeddings().weight.shape
    assert (ours.lm_head.weight is ours.get_input_embeddings().weight) == ours.config.tie_word_embeddings
    torch.testing.assert_close(logits(ours), logits(theirs), atol=1e-5, rtol=1e-5)


def test_resize_without_mean_resizing_draws_new_rows_as_transformers(tmp_path):
    ours, theirs = ours_and_theirs("llama", tmp_path)
    for model in (ours, theirs):
        torch.manual_seed(2)
        model.resize_token_embeddings(4096, mean_resizing=False)
    for weight, reference in ((ours.get_input_embeddings().weight, theirs.get_input_embeddings().weight),
                              (ours.lm_head.weight, theirs.lm_head.weight)):
        assert torch.equal(weight, reference)
        added = weight[128:].detach()
        assert abs(added.mean().item()) < 1e-3 and abs(added.std().item() - 0.02) < 1e-3
    with pytest.raises(ValueError, match="pad_to_multiple_of"):
        ours.resize_token_embeddings(200, pad_to_multiple_of=8.0)


def test_embedding_accessors_and_can_generate_match_transformers(tmp_path):
    ours, theirs = ours_and_theirs("gpt2", tmp_path)
    assert ours.can_generate() is theirs.can_generate() is True
    assert ours.config._attn_implementation == theirs.config._attn_implementation == "sdpa"
    assert warpload.models.gpt2.GPT2Model.can_generate() is transformers.GPT2Model.can_generate() is False
    assert ours.transformer.get_output_embeddings() is None and theirs.transformer.get_output_embeddings() is None
    replacement = torch.nn.Embedding(128, 64)
    for model in (ours, theirs):
        model.set_input_embeddings(replacement)
        assert model.get_input_embeddings() is replacement
        model.set_output_embeddings(torch.nn.Linear(64, 128, bias=False))
    ours.lm_head.weight.data.copy_(theirs.lm_head.weight.data)
    torch.testing.assert_close(logits(ours), logits(theirs), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("arch", ARCHS)
def test_gradient_checkpointing_recomputes_and_gives_the_same_gradients(arch, tmp_path, monkeypatch):
    ours, _ = ours_and_theirs(arch, tmp_path)
    ours.train()

    def gradients():
        ours.zero_grad()
        torch.manual_seed(0)
        ours(IDS).logits.float().pow(2).mean().backward()
        return {name: parameter.grad.clone() for name, parameter in ours.named_parameters()}

    plain = gradients()
    assert not ours.is_gradient_checkpointing
    ours.gradient_checkpointing_enable()
    assert ours.is_gradient_checkpointing and ours.supports_gradient_checkpointing
    calls = []
    for layer in ours.modules():
        if getattr(layer, "gradient_checkpointing", False):
            original = layer.checkpoint_function
            layer.checkpoint_function = lambda *a, _f=original, **k: calls.append(1) or _f(*a, **k)
    checkpointed = gradients()
    assert len(calls) == ours.config.num_hidden_layers
    for name, grad in plain.items():
        torch.testing.assert_close(checkpointed[name], grad, atol=1e-6, rtol=1e-5)
    ours.gradient_checkpointing_disable()
    assert not ours.is_gradient_checkpointing


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("dtype", [None, torch.bfloat16])
def test_from_config_initialises_as_transformers(arch, dtype):
    class_name, fields = TINY_CONFIGS[arch]
    reference_config = getattr(transformers, class_name)(**fields)
    torch.manual_seed(0)
    theirs = transformers.AutoModelForCausalLM.from_config(reference_config, dtype=dtype)
    torch.manual_seed(0)
    ours = warpload.AutoModelForCausalLM.from_config(warpload.AutoConfig.for_model(**reference_config.to_dict()),
                                                     dtype=dtype)
    assert type(ours).__name__ == type(theirs).__name__ and ours.dtype == theirs.dtype
    mine, reference = dict(ours.named_parameters()), dict(theirs.named_parameters())
    assert sorted(mine) == sorted(reference)
    for name, parameter in reference.items():
        got = mine[name].detach().float()
        assert got.device.type == "cpu" and got.shape == parameter.shape, name
        if parameter.numel() >= 1024:  # a normal draw: the same spread
            assert abs(got.std().item() / parameter.detach().float().std().item() - 1) < 0.1, name
        else:
            assert torch.equal(got, parameter.detach().float()), name  # zeros and ones
    assert (ours.lm_head.weight is ours.get_input_embeddings().weight) == ours.config.tie_word_embeddings
    assert ours.config.dtype == ours.dtype
    torch.testing.assert_close(logits(ours).float().std(), logits(theirs).float().std(), rtol=0.3, atol=0)


def test_from_config_takes_a_transformers_config():
    reference_config = transformers.GPT2Config(**TINY_CONFIGS["gpt2"][1])
    model = warpload.AutoModelForCausalLM.from_config(reference_config)
    assert isinstance(model, warpload.models.gpt2.GPT2LMHeadModel) and model.config.n_layer == 2
    no_builtin = transformers.GPTNeoXConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                            num_attention_heads=2, vocab_size=64)
    assert type(warpload.AutoModelForCausalLM.from_config(no_builtin)) is transformers.GPTNeoXForCausalLM


class TinyLlamaConfig(configs.LlamaConfig):
    model_type = "tiny-llama-for-register-test"


class TinyLlamaForCausalLM(LlamaForCausalLM):
    config_class = TinyLlamaConfig


@pytest.fixture
def registered():
    warpload.AutoModelForCausalLM.register(TinyLlamaConfig, TinyLlamaForCausalLM)
    yield
    CAUSAL_LM_CLASSES.pop(TinyLlamaConfig.model_type)
    configs.CONFIG_CLASSES.pop(TinyLlamaConfig.model_type)


def test_registered_class_is_built_by_from_pretrained_and_from_config(registered, tmp_path):
    ours, theirs = ours_and_theirs("llama", tmp_path)
    config = TinyLlamaConfig(**{key: value for key, value in ours.config.to_dict().items() if key != "model_type"})
    model = warpload.AutoModelForCausalLM.from_config(config)
    assert type(model) is TinyLlamaForCausalLM
    model.load_state_dict(ours.state_dict())
    model.save_pretrained(tmp_path / "registered")
    assert json.loads((tmp_path / "registered" / "config.json").read_text())["model_type"] == TinyLlamaConfig.model_type
    loaded = warpload.AutoModelForCausalLM.from_pretrained(tmp_path / "registered")
    assert type(loaded) is TinyLlamaForCausalLM and type(loaded.config) is TinyLlamaConfig
    assert torch.equal(logits(loaded), logits(theirs))
    assert type(warpload.AutoConfig.from_pretrained(tmp_path / "registered")) is TinyLlamaConfig


def test_register_refuses_what_transformers_refuses(registered):
    with pytest.raises(ValueError, match="already used"):
        warpload.AutoModelForCausalLM.register(TinyLlamaConfig, TinyLlamaForCausalLM)
    with pytest.raises(ValueError, match="not consistent"):
        warpload.AutoModelForCausalLM.register(configs.GPT2Config, TinyLlamaForCausalLM, exist_ok=True)
    with pytest.raises(TypeError, match="backend='transformers'"):
        warpload.AutoModelForCausalLM.register(TinyLlamaConfig, transformers.LlamaForCausalLM, exist_ok=True)


@pytest.mark.parametrize("arch", sorted(TINY_CONFIGS))
def test_config_api_answers_as_transformers(arch):
    class_name, fields = TINY_CONFIGS[arch]
    theirs = getattr(transformers, class_name)(**fields)
    ours = warpload.AutoConfig.for_model(**theirs.to_dict())
    assert ours.to_dict() == theirs.to_dict()
    assert ours.to_diff_dict() == theirs.to_diff_dict()
    assert json.loads(ours.to_json_string()) == json.loads(theirs.to_json_string())
    assert ours.to_json_string(use_diff=False) == theirs.to_json_string(use_diff=False)
    assert ours.get_text_config() is ours and ours.use_return_dict is theirs.return_dict
    assert ours._attn_implementation == theirs._attn_implementation and ours.num_labels == theirs.num_labels
    ours.torch_dtype = "bfloat16"
    assert ours.dtype == ours.torch_dtype == "bfloat16" and ours.to_dict()["dtype"] == "bfloat16"
    ours.num_labels = theirs.num_labels = 3
    assert ours.id2label == theirs.id2label and ours.label2id == theirs.label2id


def test_config_json_written_by_warpload_loads_in_transformers_equal(tmp_path):
    theirs = transformers.LlamaConfig(**TINY_CONFIGS["llama"][1], num_labels=3, return_dict=False)
    ours = warpload.AutoConfig.for_model(**theirs.to_dict())
    ours.save_pretrained(tmp_path)
    reread = transformers.AutoConfig.from_pretrained(tmp_path).to_dict()
    assert reread | {"_name_or_path": ""} == theirs.to_dict()
    assert warpload.AutoConfig.from_pretrained(tmp_path).id2label == {0: "LABEL_0", 1: "LABEL_1", 2: "LABEL_2"}
    with pytest.raises(NotImplementedError, match="upload"):
        ours.save_pretrained(tmp_path, push_to_hub=True)
