"""The transformers backend: architectures warpload does not build, loaded by its engine into transformers' class."""
from __future__ import annotations

import json

import pytest
import torch

pytest.importorskip("transformers")
import transformers  # noqa: E402

from conftest import same_bits  # noqa: E402
from model_checkpoints import left_padded_prompts, save_checkpoint, tiny_transformers_model  # noqa: E402
from warpload import AutoConfig, AutoModelForCausalLM  # noqa: E402

NOT_BUILT_IN = {
    "gpt_neox": lambda: transformers.GPTNeoXConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                                   num_attention_heads=4, vocab_size=128, max_position_embeddings=64),
    "phi": lambda: transformers.PhiConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                          num_attention_heads=4, vocab_size=128, max_position_embeddings=64),
}


def random_model(config):
    torch.manual_seed(0)
    return transformers.AutoModelForCausalLM.from_config(config).eval()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("fmt", ["safetensors", "bin-sharded"])
@pytest.mark.parametrize("model_type", sorted(NOT_BUILT_IN))
def test_unbuilt_architecture_matches_transformers_loading(model_type, fmt, dtype, tmp_path):
    folder = save_checkpoint(random_model(NOT_BUILT_IN[model_type]()), tmp_path, fmt, dtype)
    ours, our_info = AutoModelForCausalLM.from_pretrained(folder, output_loading_info=True)
    theirs, their_info = transformers.AutoModelForCausalLM.from_pretrained(folder, output_loading_info=True)
    assert type(ours) is type(theirs)
    assert our_info == their_info
    assert not ours.training and ours.dtype == dtype
    ids, mask = left_padded_prompts()
    with torch.no_grad():
        torch.testing.assert_close(ours(ids, attention_mask=mask).logits, theirs(ids, attention_mask=mask).logits,
                                   rtol=0, atol=1e-5 if dtype == torch.float32 else 2 ** -7)
    for name, tensor in theirs.state_dict().items():
        assert same_bits(ours.state_dict()[name], tensor), name


def test_forced_transformers_backend_on_a_builtin_architecture(tmp_path):
    folder = save_checkpoint(tiny_transformers_model("qwen3"), tmp_path)
    config = AutoConfig.from_pretrained(folder)  # a warpload config object converts to transformers'
    ours = AutoModelForCausalLM.from_pretrained(folder, backend="transformers", config=config)
    theirs = transformers.AutoModelForCausalLM.from_pretrained(folder)
    assert type(ours) is transformers.Qwen3ForCausalLM
    assert ours.lm_head.weight is ours.model.embed_tokens.weight
    ids, mask = left_padded_prompts()
    assert ours.generate(ids, attention_mask=mask, max_new_tokens=8, do_sample=False).tolist() == \
        theirs.generate(ids, attention_mask=mask, max_new_tokens=8, do_sample=False).tolist()


def test_attn_implementation_other_than_sdpa_and_eager_goes_to_transformers(tmp_path):
    folder = save_checkpoint(tiny_transformers_model("llama"), tmp_path)
    model = AutoModelForCausalLM.from_pretrained(folder, attn_implementation="flex_attention")
    assert type(model) is transformers.LlamaForCausalLM
    assert model.config._attn_implementation == "flex_attention"
    builtin = AutoModelForCausalLM.from_pretrained(folder, attn_implementation="eager")
    assert type(builtin).__module__.startswith("warpload.") and builtin.config._attn_implementation == "eager"


def test_missing_and_mis_shaped_keys_follow_transformers(tmp_path):
    reference = random_model(NOT_BUILT_IN["gpt_neox"]())
    folder = save_checkpoint(reference, tmp_path)
    ours, our_info = AutoModelForCausalLM.from_pretrained(folder, output_loading_info=True, num_hidden_layers=3)
    theirs, their_info = transformers.AutoModelForCausalLM.from_pretrained(folder, output_loading_info=True,
                                                                           num_hidden_layers=3)
    assert our_info == their_info and our_info["missing_keys"]
    with pytest.raises(RuntimeError):
        AutoModelForCausalLM.from_pretrained(folder, vocab_size=200)


SCALED_GPT2_CODE = """
from transformers import GPT2LMHeadModel


class ScaledGPT2(GPT2LMHeadModel):
    def forward(self, *args, **kwargs):
        output = super().forward(*args, **kwargs)
        output.logits = output.logits * 3
        return output
"""


def test_trusted_remote_code_wins_over_a_known_model_type_as_in_transformers(tmp_path):
    folder = save_checkpoint(tiny_transformers_model("gpt2"), tmp_path / "model", "safetensors")
    (folder / "modeling_scaled.py").write_text(SCALED_GPT2_CODE)
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "modeling_scaled.ScaledGPT2"}
    (folder / "config.json").write_text(json.dumps(config))
    ids, _ = left_padded_prompts()
    for trust_remote_code, class_name in ((None, "GPT2LMHeadModel"), (False, "GPT2LMHeadModel"),
                                          (True, "ScaledGPT2")):
        ours = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=trust_remote_code)
        theirs = transformers.AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=trust_remote_code)
        assert type(theirs).__name__ == class_name
        assert type(ours).__name__ == (class_name if trust_remote_code else "GPT2LMHeadModel")
        if trust_remote_code:
            with torch.no_grad():
                torch.testing.assert_close(ours(ids[:1]).logits, theirs(ids[:1]).logits)
