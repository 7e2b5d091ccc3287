"""from_pretrained's options and key handling, held against transformers' from_pretrained on the same folders."""
from __future__ import annotations

import copy
import json
import shutil
import subprocess
import sys

import pytest
import torch

pytest.importorskip("transformers")
import transformers  # noqa: E402

from conftest import FIXTURES, same_bits  # noqa: E402
from model_checkpoints import left_padded_prompts, save_checkpoint, tiny_transformers_model, write_raw_checkpoint  # noqa: E402
from warpload import AutoConfig, AutoModelForCausalLM  # noqa: E402
from warpload.errors import (
    ArchitectureNotSupportedError,
    CheckpointNotFoundError,  # noqa: E402
    ShapeMismatchError,
)
from warpload.loading import transformers_backend
from warpload.models import gpt2, llama

PREFIX = {"gpt2": "transformer", "llama": "model"}
BASE_CLASSES = {"gpt2": (gpt2.GPT2Model, transformers.GPT2Model), "llama": (llama.LlamaModel, transformers.LlamaModel)}


def load_both(folder, **options):
    ours, our_info = AutoModelForCausalLM.from_pretrained(folder, output_loading_info=True, **options)
    theirs, their_info = transformers.AutoModelForCausalLM.from_pretrained(folder, output_loading_info=True, **options)
    return ours, our_info, theirs, their_info


def logits(model, ids=None):
    ids = left_padded_prompts()[0][:1] if ids is None else ids
    with torch.no_grad():
        return model(ids).logits


def edited_state(arch, edit):
    model = tiny_transformers_model(arch)
    return model, edit(dict(model.state_dict()), PREFIX[arch])


def with_extra_keys(state, prefix):
    # GPT-2's old attention buffers and Llama's old rotary buffers are ignored as transformers ignores them.
    extra = ["h.0.attn.extra", "h.0.attn.bias", "h.0.attn.masked_bias", "layers.0.self_attn.rotary_emb.inv_freq"]
    return {**state, "foo": torch.ones(1), **{f"{prefix}.{name}": torch.ones(2) for name in extra}}


def without_layer_1_mlp_and_head(state, prefix):
    return {key: value for key, value in state.items() if ".1.mlp." not in key and key != "lm_head.weight"}


def base_model_only(state, prefix):
    return {key.removeprefix(prefix + "."): value for key, value in state.items() if key.startswith(prefix + ".")}


def with_untied_different_head(state, prefix):
    return {**state, "lm_head.weight": state["lm_head.weight"] + 1.0}


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
@pytest.mark.parametrize("edit", [with_extra_keys, without_layer_1_mlp_and_head, base_model_only,
                                  with_untied_different_head])
def test_loading_info_equals_transformers(arch, edit, tmp_path):
    model, state = edited_state(arch, edit)
    folder = write_raw_checkpoint(tmp_path, model.config, state)
    ours, our_info, theirs, their_info = load_both(folder)
    assert our_info == their_info
    assert set(our_info) == {"missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs"}
    if not our_info["missing_keys"]:
        torch.testing.assert_close(logits(ours), logits(theirs), rtol=0, atol=1e-5)


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_mis_shaped_tensor_raises_unless_ignored(arch, tmp_path):
    key = "transformer.wpe.weight" if arch == "gpt2" else "model.layers.0.mlp.up_proj.weight"
    model, state = edited_state(arch, lambda s, p: {**s, key: torch.zeros(s[key].shape[0] + 1, s[key].shape[1])})
    folder = write_raw_checkpoint(tmp_path, model.config, state)
    with pytest.raises(RuntimeError):
        transformers.AutoModelForCausalLM.from_pretrained(folder)
    with pytest.raises(ShapeMismatchError, match="ignore_mismatched_sizes=True"):
        AutoModelForCausalLM.from_pretrained(folder)
    ours, our_info, _, their_info = load_both(folder, ignore_mismatched_sizes=True)
    assert our_info == their_info and len(our_info["mismatched_keys"]) == 1
    assert ours.get_parameter(key).shape == model.get_parameter(key).shape


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_head_checkpoint_loads_into_base_model(arch, tmp_path):
    model = tiny_transformers_model(arch)
    folder = write_raw_checkpoint(tmp_path, model.config, dict(model.state_dict()))
    ours_class, their_class = BASE_CLASSES[arch]
    ours, our_info = ours_class.from_pretrained(folder, output_loading_info=True)
    theirs, their_info = their_class.from_pretrained(folder, output_loading_info=True)
    assert type(ours) is ours_class
    assert our_info == their_info == {"missing_keys": set(), "unexpected_keys": {"lm_head.weight"},
                                      "mismatched_keys": set(), "error_msgs": []}
    ids = left_padded_prompts()[0]
    with torch.no_grad():
        torch.testing.assert_close(ours(ids).last_hidden_state, theirs(ids).last_hidden_state, rtol=0, atol=1e-5)


@pytest.mark.parametrize("arch", ["gpt2", "qwen3"])
def test_tied_embeddings_share_one_parameter(arch, tmp_path):
    folder = save_checkpoint(tiny_transformers_model(arch), tmp_path)
    model = AutoModelForCausalLM.from_pretrained(folder)
    embedding = model.get_input_embeddings().weight
    assert model.lm_head.weight is embedding
    assert model.lm_head.weight.data_ptr() == embedding.data_ptr()


def test_untied_embeddings_stay_separate(tmp_path):
    model = AutoModelForCausalLM.from_pretrained(save_checkpoint(tiny_transformers_model("llama"), tmp_path))
    assert model.lm_head.weight.data_ptr() != model.model.embed_tokens.weight.data_ptr()


def test_tied_bin_checkpoint_reads_the_shared_storage_once(tmp_path):
    folder = save_checkpoint(tiny_transformers_model("gpt2"), tmp_path, "bin")
    ours, our_info, theirs, their_info = load_both(folder)
    assert our_info == their_info
    assert ours.lm_head.weight is ours.transformer.wte.weight
    torch.testing.assert_close(logits(ours), logits(theirs), rtol=0, atol=0)


def two_weight_files(tmp_path):
    """A folder with model.safetensors (seed 0) and pytorch_model.bin (seed 1): which one loaded shows in the logits."""
    save_checkpoint(tiny_transformers_model("gpt2", seed=0), tmp_path)
    bin_folder = save_checkpoint(tiny_transformers_model("gpt2", seed=1), tmp_path / "bin", "bin")
    (bin_folder / "pytorch_model.bin").rename(tmp_path / "pytorch_model.bin")
    return tmp_path


def test_use_safetensors_picks_the_file_transformers_picks(tmp_path):
    folder = two_weight_files(tmp_path)
    results = []
    for use_safetensors in (None, False):
        ours, _, theirs, _ = load_both(folder, use_safetensors=use_safetensors)
        torch.testing.assert_close(logits(ours), logits(theirs), rtol=0, atol=0)
        results.append(logits(ours))
    assert not torch.equal(*results)


def test_use_safetensors_true_without_safetensors_says_so(tmp_path):
    folder = save_checkpoint(tiny_transformers_model("gpt2"), tmp_path, "bin")
    with pytest.raises(CheckpointNotFoundError) as error:
        AutoModelForCausalLM.from_pretrained(folder, use_safetensors=True)
    assert str(error.value) == f"Error no file named model.safetensors found in directory {folder}."
    assert isinstance(error.value, OSError)


def test_folder_without_weights_raises_transformers_message(tmp_path):
    tiny_transformers_model("gpt2").config.save_pretrained(tmp_path)
    with pytest.raises(OSError, match="Error no file named model.safetensors, or pytorch_model.bin, found in"):
        AutoModelForCausalLM.from_pretrained(tmp_path)


@pytest.mark.parametrize("fmt", ["safetensors", "safetensors-sharded"])
def test_variant_reads_the_variant_files(fmt, tmp_path):
    model = tiny_transformers_model("llama")
    model.save_pretrained(tmp_path, variant="fp16", **({"max_shard_size": "40KB"} if fmt.endswith("sharded") else {}))
    save_checkpoint(tiny_transformers_model("llama", seed=5), tmp_path / "plain")
    (tmp_path / "plain" / "model.safetensors").rename(tmp_path / "model.safetensors")
    ours, _, theirs, _ = load_both(tmp_path, variant="fp16")
    torch.testing.assert_close(logits(ours), logits(theirs), rtol=0, atol=0)
    torch.testing.assert_close(logits(ours), logits(model), rtol=0, atol=1e-5)


def test_subfolder(tmp_path):
    save_checkpoint(tiny_transformers_model("gpt2"), tmp_path / "inner")
    ours, _, theirs, _ = load_both(tmp_path, subfolder="inner")
    torch.testing.assert_close(logits(ours), logits(theirs), rtol=0, atol=0)


@pytest.mark.parametrize("option", [{"dtype": torch.float16}, {"dtype": "float16"}, {"dtype": "auto"}, {},
                                    {"torch_dtype": torch.bfloat16}, {"dtype": "float32"}])
def test_dtype_options_match_transformers(option, tmp_path):
    folder = save_checkpoint(tiny_transformers_model("llama"), tmp_path, dtype=torch.bfloat16)
    ours, _, theirs, _ = load_both(folder, **option)
    assert ours.dtype == theirs.dtype
    assert {p.dtype for p in ours.parameters()} == {theirs.dtype}
    assert ours.config.dtype == theirs.config.dtype
    for name, tensor in theirs.state_dict().items():
        assert same_bits(ours.state_dict()[name], tensor), name  # the engine converts as torch rounds


@pytest.mark.parametrize("dtype", ["float17", torch.int8])
def test_invalid_dtype_raises_value_error(dtype, tmp_path):
    # transformers 5.24 itself raises AttributeError for "float17"; its message and the reference
    # (from_pretrained.md section 2) say ValueError, which warpload raises.
    folder = save_checkpoint(tiny_transformers_model("gpt2"), tmp_path)
    with pytest.raises(ValueError, match="dtype"):
        AutoModelForCausalLM.from_pretrained(folder, dtype=dtype)


def test_config_override_changes_the_model(tmp_path):
    folder = save_checkpoint(tiny_transformers_model("gpt2"), tmp_path)
    ours, our_info, theirs, their_info = load_both(folder, n_layer=1)
    assert ours.config.n_layer == theirs.config.n_layer == 1
    assert len(ours.transformer.h) == 1
    assert our_info == their_info and our_info["unexpected_keys"]
    torch.testing.assert_close(logits(ours), logits(theirs), rtol=0, atol=1e-5)


def test_unknown_keyword_raises_type_error(tmp_path):
    folder = save_checkpoint(tiny_transformers_model("gpt2"), tmp_path)
    with pytest.raises(TypeError):
        transformers.AutoModelForCausalLM.from_pretrained(folder, foo=1)
    with pytest.raises(TypeError, match="foo"):
        AutoModelForCausalLM.from_pretrained(folder, foo=1)


def test_config_object_is_copied_and_keywords_go_to_the_model(tmp_path):
    folder = save_checkpoint(tiny_transformers_model("gpt2"), tmp_path)
    config = AutoConfig.from_pretrained(folder)
    before = config.to_dict()
    with pytest.raises(TypeError):
        AutoModelForCausalLM.from_pretrained(folder, config=config, n_layer=1)
    model = AutoModelForCausalLM.from_pretrained(folder, config=config)
    assert config.to_dict() == before and model.config is not config


def test_config_path_is_honoured(tmp_path):
    folder = save_checkpoint(tiny_transformers_model("gpt2"), tmp_path / "ckpt")
    config = AutoConfig.from_pretrained(folder, n_layer=1)
    config.save_pretrained(tmp_path / "other")
    model = AutoModelForCausalLM.from_pretrained(folder, config=str(tmp_path / "other" / "config.json"))
    assert model.config.n_layer == 1


def test_transformers_config_object_is_accepted(tmp_path):
    reference = tiny_transformers_model("llama")
    folder = save_checkpoint(reference, tmp_path)
    model = AutoModelForCausalLM.from_pretrained(folder, config=reference.config)
    assert type(model) is llama.LlamaForCausalLM
    torch.testing.assert_close(logits(model), logits(reference), rtol=0, atol=1e-5)


def test_rope_theta_override_reaches_the_rotary_frequencies(tmp_path):
    # transformers 5 leaves rope_theta= unused (its model constructor then rejects it); warpload
    # applies it to rope_parameters, as transformers 4 did.
    folder = save_checkpoint(tiny_transformers_model("llama"), tmp_path)
    default = AutoModelForCausalLM.from_pretrained(folder)
    changed = AutoModelForCausalLM.from_pretrained(folder, rope_theta=1000.0)
    assert changed.config.rope_parameters["rope_theta"] == 1000.0
    assert not torch.equal(changed.model.rotary_emb.inv_freq, default.model.rotary_emb.inv_freq)


def test_state_dict_option_needs_no_files_and_keeps_the_tensors(tmp_path):
    reference = tiny_transformers_model("llama")
    state = {key: value.clone() for key, value in reference.state_dict().items()}
    config = AutoConfig.for_model(**reference.config.to_dict())
    model, info = AutoModelForCausalLM.from_pretrained(None, config=config, state_dict=state, output_loading_info=True)
    assert info["missing_keys"] == set() and info["unexpected_keys"] == set()
    assert model.model.embed_tokens.weight.data_ptr() == state["model.embed_tokens.weight"].data_ptr()
    torch.testing.assert_close(logits(model), logits(reference), rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="state_dict"):
        AutoModelForCausalLM.from_pretrained(save_checkpoint(reference, tmp_path), state_dict=state)


@pytest.mark.parametrize("device_map", ["cpu", torch.device("cpu"), {"": "cpu"}])
def test_device_map_to_one_device(device_map, tmp_path):
    model = AutoModelForCausalLM.from_pretrained(save_checkpoint(tiny_transformers_model("gpt2"), tmp_path),
                                                 device_map=device_map)
    assert model.device == torch.device("cpu")


@pytest.mark.parametrize("device_map, error", [(-1, ValueError), ("nonsense", ValueError),
                                               ({"transformer": "cpu", "lm_head": "meta"}, ValueError)])
def test_unsupported_device_maps_say_why(device_map, error, tmp_path):
    folder = save_checkpoint(tiny_transformers_model("gpt2"), tmp_path)
    with pytest.raises(error, match="device_map"):
        AutoModelForCausalLM.from_pretrained(folder, device_map=device_map)


def test_tf_weights_need_from_tf_and_pytorch_weights_ignore_it(tmp_path):
    folder = save_checkpoint(tiny_transformers_model("gpt2"), tmp_path)
    expected = logits(AutoModelForCausalLM.from_pretrained(folder))
    # transformers 4: from_tf=True looks for TF files first, then loads PyTorch weights as usual.
    assert torch.equal(logits(AutoModelForCausalLM.from_pretrained(folder, from_tf=True)), expected)
    (folder / "model.safetensors").unlink()
    shutil.copy(FIXTURES / "tf" / "tf_gpt2_h5" / "tf_model.h5", folder)
    with pytest.raises(CheckpointNotFoundError, match="TensorFlow weights \\(tf_model.h5\\): use `from_tf=True`"):
        AutoModelForCausalLM.from_pretrained(folder)
    with pytest.raises(ValueError, match="please set from_tf to True"):
        AutoModelForCausalLM.from_pretrained(folder / "tf_model.h5", config=folder)


def test_compatibility_options_are_accepted(tmp_path):
    folder = save_checkpoint(tiny_transformers_model("gpt2"), tmp_path)
    model = AutoModelForCausalLM.from_pretrained(folder, low_cpu_mem_usage=True, mirror="x", _fast_init=False,
                                                 revision="main", trust_remote_code=False)
    assert not model.training


def test_generation_config_json_sets_generation_defaults(tmp_path):
    folder = save_checkpoint(tiny_transformers_model("gpt2"), tmp_path)
    (folder / "generation_config.json").write_text(json.dumps({"max_length": 13, "eos_token_id": 2, "top_k": 7}))
    model = AutoModelForCausalLM.from_pretrained(folder)
    assert (model.generation_config.max_length, model.generation_config.top_k) == (13, 7)
    ids = left_padded_prompts()[0][:1]
    assert model.generate(ids, eos_token_id=None).shape[1] == 13


def test_load_timings_are_recorded(tmp_path):
    model = AutoModelForCausalLM.from_pretrained(save_checkpoint(tiny_transformers_model("gpt2"), tmp_path))
    timings = model.load_timings
    assert min(timings.resolve_s, timings.plan_s, timings.read_s) >= 0


def test_backend_warpload_refuses_what_it_cannot_build(tmp_path):
    folder = save_checkpoint(tiny_transformers_model("gpt2", activation_function="gelu_fast"), tmp_path)
    with pytest.raises(ArchitectureNotSupportedError, match="gelu_fast"):
        AutoModelForCausalLM.from_pretrained(folder, backend="warpload")
    model = AutoModelForCausalLM.from_pretrained(folder)
    assert type(model) is transformers.GPT2LMHeadModel


def test_without_transformers_an_unknown_architecture_lists_the_builtins(tmp_path, monkeypatch):
    reference = transformers.GPTNeoXForCausalLM(transformers.GPTNeoXConfig(
        hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, vocab_size=128))
    folder = save_checkpoint(reference, tmp_path)
    monkeypatch.setattr(transformers_backend, "is_available", lambda: False)
    with pytest.raises(ArchitectureNotSupportedError) as error:
        AutoModelForCausalLM.from_pretrained(folder)
    assert "GPT2LMHeadModel" in str(error.value) and "pip install transformers" in str(error.value)


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_builtin_path_never_imports_transformers_or_dynamo(arch, tmp_path):
    # torch._dynamo is what meta-device arithmetic (torch._refs) imports on first use: 1 s of a
    # fresh process's load, once paid by the rotary frequencies computed on meta.
    folder = save_checkpoint(tiny_transformers_model(arch), tmp_path)
    code = (
        "import sys, torch, warpload\n"
        f"model = warpload.AutoModelForCausalLM.from_pretrained({str(folder)!r})\n"
        "model.generate(torch.tensor([[5, 6, 7]]), max_new_tokens=3)\n"
        "print('transformers' in sys.modules, 'torch._dynamo' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False False"


def test_config_is_not_shared_with_the_caller_state_dict(tmp_path):
    reference = tiny_transformers_model("gpt2")
    config = AutoConfig.for_model(**reference.config.to_dict())
    snapshot = copy.deepcopy(config.to_dict())
    AutoModelForCausalLM.from_pretrained(None, config=config, state_dict=dict(reference.state_dict()))
    assert config.to_dict() == snapshot
