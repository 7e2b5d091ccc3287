"""Each built-in architecture against transformers on checkpoints transformers wrote: logits, text, state dicts."""
from __future__ import annotations

import pytest
import torch

pytest.importorskip("transformers")
import transformers  # noqa: E402

from conftest import same_bits  # noqa: E402
from model_checkpoints import (  # noqa: E402
    FORMATS,
    ROPE_VARIANTS,
    TINY_CONFIGS,
    left_padded_prompts,
    save_checkpoint,
    tiny_transformers_model,
)
from warpload import AutoModelForCausalLM  # noqa: E402
from warpload.models import gpt2, llama  # noqa: E402

BUILTIN_CLASSES = {"gpt2": gpt2.GPT2LMHeadModel, "llama": llama.LlamaForCausalLM, "mistral": llama.MistralForCausalLM,
                   "qwen2": llama.Qwen2ForCausalLM, "qwen3": llama.Qwen3ForCausalLM}
# Logits agree bit for bit today (the same ops in the same order). fp32 must stay within 1e-5; bf16
# allows one bf16 step at |logit| ~ 1 (2**-7) for a reduction another torch version orders differently.
TOLERANCE = {torch.float32: 1e-5, torch.bfloat16: 2 ** -7}


@pytest.fixture(scope="module", params=sorted(TINY_CONFIGS))
def arch(request):
    return request.param


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("fmt", FORMATS)
def test_builtin_model_matches_transformers(arch, fmt, dtype, tmp_path):
    folder = save_checkpoint(tiny_transformers_model(arch), tmp_path / arch, fmt, dtype)
    ours = AutoModelForCausalLM.from_pretrained(folder)
    reference = transformers.AutoModelForCausalLM.from_pretrained(folder)
    assert type(ours) is BUILTIN_CLASSES[arch]
    assert ours.dtype == reference.dtype == dtype
    assert not ours.training

    ids, mask = left_padded_prompts()
    with torch.no_grad():
        expected = reference(ids[:1]).logits
        got = ours(ids[:1]).logits
        padded_expected = reference(ids, attention_mask=mask).logits
        padded_got = ours(ids, attention_mask=mask).logits
    torch.testing.assert_close(got, expected, rtol=0, atol=TOLERANCE[dtype])
    torch.testing.assert_close(padded_got, padded_expected, rtol=0, atol=TOLERANCE[dtype])

    generated = ours.generate(ids, attention_mask=mask, max_new_tokens=20, pad_token_id=0)
    reference_generated = reference.generate(ids, attention_mask=mask, max_new_tokens=20, do_sample=False,
                                             pad_token_id=0)
    assert generated.tolist() == reference_generated.tolist()

    ours_state, reference_state = ours.state_dict(), reference.state_dict()
    assert list(ours_state) == list(reference_state)
    for name, tensor in reference_state.items():
        assert same_bits(ours_state[name], tensor), name


def assert_same_logits_and_greedy_text(ours, reference, prompt_length=9):
    """Logits of left-padded prompts within 1e-5 (fp32) and 20 greedy tokens identical."""
    ids, mask = left_padded_prompts()
    ids = torch.cat([ids, ids], dim=1)[:, :prompt_length] if prompt_length > ids.shape[1] else ids
    mask = torch.cat([mask, torch.ones_like(mask)], dim=1)[:, :ids.shape[1]]
    with torch.no_grad():
        torch.testing.assert_close(ours(ids, attention_mask=mask).logits,
                                   reference(ids, attention_mask=mask).logits, rtol=0, atol=1e-5)
    generated = ours.generate(ids, attention_mask=mask, max_new_tokens=20, pad_token_id=0)
    expected = reference.generate(ids, attention_mask=mask, max_new_tokens=20, do_sample=False, pad_token_id=0)
    assert generated.tolist() == expected.tolist()


@pytest.mark.parametrize("variant", sorted(ROPE_VARIANTS))
@pytest.mark.parametrize("family", ["llama", "mistral", "qwen2", "qwen3"])
def test_rope_scaling_variants_match_transformers(family, variant, tmp_path):
    # 18-token prompts + 20 new tokens run past max_position_embeddings (16), so dynamic RoPE
    # rescales mid-generation and yarn/llama3 cover positions beyond their original context.
    reference = tiny_transformers_model(family, rope_scaling=ROPE_VARIANTS[variant], max_position_embeddings=16)
    assert reference.config.rope_parameters["rope_type"] == (variant if ROPE_VARIANTS[variant] else "default")
    ours = AutoModelForCausalLM.from_pretrained(save_checkpoint(reference, tmp_path))
    assert ours.model.rotary_emb.rope_type == reference.model.rotary_emb.rope_type
    assert_same_logits_and_greedy_text(ours, reference, prompt_length=18)


@pytest.mark.parametrize("tie", [True, False], ids=["tied", "untied"])
@pytest.mark.parametrize("family", ["gpt2", "llama", "qwen2"])
def test_tie_word_embeddings_setting_matches_transformers(family, tie, tmp_path):
    reference = tiny_transformers_model(family, tie_word_embeddings=tie)
    assert (reference.lm_head.weight is reference.get_input_embeddings().weight) == tie
    folder = save_checkpoint(reference, tmp_path)
    ours = AutoModelForCausalLM.from_pretrained(folder)
    assert (ours.lm_head.weight is ours.get_input_embeddings().weight) == tie
    assert_same_logits_and_greedy_text(ours, transformers.AutoModelForCausalLM.from_pretrained(folder))


def test_saved_state_dict_loads_back_into_transformers(arch, tmp_path):
    from safetensors.torch import save_model

    model = AutoModelForCausalLM.from_pretrained(save_checkpoint(tiny_transformers_model(arch), tmp_path / "in"))
    out = tmp_path / "out"
    model.config.save_pretrained(out)
    save_model(model, str(out / "model.safetensors"))  # drops one name of each tied pair, as transformers saves
    reloaded, info = transformers.AutoModelForCausalLM.from_pretrained(out, output_loading_info=True)
    assert info == {"missing_keys": set(), "unexpected_keys": set(), "mismatched_keys": set(), "error_msgs": []}
    ids = left_padded_prompts()[0]
    with torch.no_grad():
        torch.testing.assert_close(reloaded(ids).logits, model(ids).logits, rtol=0, atol=1e-5)


def test_module_tree_matches_transformers(arch):
    reference = tiny_transformers_model(arch)
    config = BUILTIN_CLASSES[arch].config_class(**reference.config.to_dict())
    with torch.device("meta"):
        model = BUILTIN_CLASSES[arch](config)
    assert [name for name, _ in model.named_modules()] == [name for name, _ in reference.named_modules()]
    assert [name for name, _ in model.named_buffers()] == [name for name, _ in reference.named_buffers()]


def test_kv_cache_decoding_equals_full_recompute(arch, tmp_path):
    folder = save_checkpoint(tiny_transformers_model(arch), tmp_path / arch)
    model = AutoModelForCausalLM.from_pretrained(folder)
    ids, mask = left_padded_prompts()
    with_cache = model.generate(ids, attention_mask=mask, max_new_tokens=12, pad_token_id=0)
    without_cache = model.generate(ids, attention_mask=mask, max_new_tokens=12, pad_token_id=0, use_cache=False)
    assert with_cache.tolist() == without_cache.tolist()


def test_forward_returns_a_cache_to_continue_from(arch, tmp_path):
    folder = save_checkpoint(tiny_transformers_model(arch), tmp_path / arch)
    model = AutoModelForCausalLM.from_pretrained(folder)
    ids, _ = left_padded_prompts()
    with torch.no_grad():
        full = model(ids[:1]).logits
        head = model(ids[:1, :5], use_cache=True)
        tail = model(ids[:1, 5:], past_key_values=head.past_key_values, use_cache=True)
    assert head.past_key_values is tail.past_key_values
    assert tail.past_key_values.get_seq_length() == ids.shape[1]
    torch.testing.assert_close(torch.cat([head.logits, tail.logits], dim=1), full, rtol=0, atol=1e-5)
