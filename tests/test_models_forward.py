"""forward of the built-in models against transformers: loss, hidden states, attentions, eager vs sdpa, tuple and
ModelOutput forms, inputs_embeds, caches (warpload's and transformers' DynamicCache), flash-attention errors."""
from __future__ import annotations

import importlib.util
import logging
import os
import pickle
import subprocess
import sys
import textwrap

import pytest
import torch

pytest.importorskip("transformers")
import transformers  # noqa: E402

from model_checkpoints import TINY_CONFIGS, left_padded_prompts, save_checkpoint, tiny_transformers_model  # noqa: E402
from warpload import AutoModelForCausalLM  # noqa: E402
from warpload.models.attention import KVCache  # noqa: E402

ATOL = 1e-5


@pytest.fixture(scope="module", params=sorted(TINY_CONFIGS))
def arch(request):
    return request.param


@pytest.fixture(scope="module")
def folder(arch, tmp_path_factory):
    return save_checkpoint(tiny_transformers_model(arch), tmp_path_factory.mktemp(arch))


def load_pair(folder, attn_implementation="sdpa"):
    ours = AutoModelForCausalLM.from_pretrained(folder, attn_implementation=attn_implementation)
    reference = transformers.AutoModelForCausalLM.from_pretrained(folder, attn_implementation=attn_implementation)
    return ours, reference.eval()


def long_prompts():
    """18-token left-padded prompts: longer than Mistral's sliding window (8)."""
    ids, mask = left_padded_prompts()
    return torch.cat([ids, ids], dim=1), torch.cat([mask, torch.ones_like(mask)], dim=1)


def labels_of(ids, mask, ignore_index=-100):
    labels = ids.masked_fill(mask == 0, ignore_index)
    labels[0, 4] = ignore_index
    return labels


def assert_same_tensors(got, expected):
    assert len(got) == len(expected)
    for ours, theirs in zip(got, expected):
        torch.testing.assert_close(ours, theirs, rtol=0, atol=ATOL)


def test_loss_with_labels_matches_transformers(folder):
    ours, reference = load_pair(folder)
    ids, mask = long_prompts()
    for loss_kwargs in ({}, {"num_items_in_batch": 7}, {"num_items_in_batch": torch.tensor(5)}, {"ignore_index": 0}):
        labels = labels_of(ids, mask, loss_kwargs.get("ignore_index", -100))
        with torch.no_grad():
            got = ours(ids, attention_mask=mask, labels=labels, **loss_kwargs)
            expected = reference(ids, attention_mask=mask, labels=labels, **loss_kwargs)
        assert got.loss.dtype == torch.float32
        torch.testing.assert_close(got.loss, expected.loss, rtol=0, atol=ATOL)
        torch.testing.assert_close(got.logits, expected.logits, rtol=0, atol=ATOL)


def test_loss_with_shift_labels_and_gradients_match_transformers(folder):
    ours, reference = load_pair(folder)
    ids, mask = long_prompts()
    shift_labels = torch.roll(labels_of(ids, mask), -1, dims=1)
    got = ours(ids, attention_mask=mask, labels=ids, shift_labels=shift_labels)
    expected = reference(ids, attention_mask=mask, labels=ids, shift_labels=shift_labels)
    torch.testing.assert_close(got.loss, expected.loss, rtol=0, atol=ATOL)
    got.loss.backward()
    expected.loss.backward()
    ours_grad = ours.get_output_embeddings().weight.grad
    torch.testing.assert_close(ours_grad, reference.get_output_embeddings().weight.grad, rtol=0, atol=ATOL)


def test_eager_hidden_states_and_attentions_match_transformers(folder):
    ours, reference = load_pair(folder, "eager")
    assert ours.config._attn_implementation == "eager"
    ids, mask = long_prompts()
    with torch.no_grad():
        got = ours(ids, attention_mask=mask, output_hidden_states=True, output_attentions=True)
        expected = reference(ids, attention_mask=mask, output_hidden_states=True, output_attentions=True)
    assert list(got.keys()) == list(expected.keys())
    assert type(got).__name__ == type(expected).__name__
    torch.testing.assert_close(got.logits, expected.logits, rtol=0, atol=ATOL)
    assert_same_tensors(got.hidden_states, expected.hidden_states)
    assert_same_tensors(got.attentions, expected.attentions)
    assert len(got.attentions) == ours.config.num_hidden_layers


def test_eager_attentions_of_a_cached_step_match_transformers(folder):
    ours, reference = load_pair(folder, "eager")
    ids, mask = long_prompts()
    step_mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
    next_ids = torch.tensor([[5], [6]])
    with torch.no_grad():
        cache = ours(ids, attention_mask=mask).cache
        reference_cache = reference(ids, attention_mask=mask).cache
        got = ours(next_ids, attention_mask=step_mask, cache=cache, output_attentions=True)
        expected = reference(next_ids, attention_mask=step_mask, cache=reference_cache, output_attentions=True)
    torch.testing.assert_close(got.logits, expected.logits, rtol=0, atol=ATOL)
    for layer_weights, reference_weights in zip(got.attentions, expected.attentions):
        # transformers' cache keeps only a sliding window's last keys; warpload's keeps all, weighted 0 outside it.
        visible = reference_weights.shape[-1]
        torch.testing.assert_close(layer_weights[..., -visible:], reference_weights, rtol=0, atol=ATOL)
        assert not layer_weights[..., :-visible].any()


def test_eager_and_sdpa_logits_agree(folder):
    eager = AutoModelForCausalLM.from_pretrained(folder, attn_implementation="eager")
    sdpa = AutoModelForCausalLM.from_pretrained(folder)
    assert sdpa.config._attn_implementation == "sdpa"
    ids, mask = long_prompts()
    real = mask.bool()  # padded positions attend to nothing: eager and SDPA fill them differently
    with torch.no_grad():
        torch.testing.assert_close(eager(ids, attention_mask=mask).logits[real],
                                   sdpa(ids, attention_mask=mask).logits[real], rtol=0, atol=ATOL)
    eager.config._attn_implementation = "sdpa"  # switched at run time, as transformers allows
    with torch.no_grad():
        assert eager(ids, output_attentions=True).attentions == ()


def test_sdpa_output_attentions_gives_empty_tuple_and_warns_as_transformers(folder, caplog, monkeypatch):
    from warpload.models import forward_options

    monkeypatch.setattr(forward_options.SdpaWeightsWarning, "warned", False)
    ours, reference = load_pair(folder)
    ids, _ = left_padded_prompts()
    with torch.no_grad(), caplog.at_level(logging.WARNING, logger="warpload"):
        got = ours(ids, output_attentions=True, output_hidden_states=True)
        expected = reference(ids, output_attentions=True, output_hidden_states=True)
    assert got.attentions == expected.attentions == ()
    assert list(got.keys()) == list(expected.keys())
    assert "does not support `output_attentions=True`" in caplog.text
    assert_same_tensors(got.hidden_states, expected.hidden_states)


def test_return_dict_false_gives_transformers_tuple(folder):
    ours, reference = load_pair(folder, "eager")
    ids, mask = long_prompts()
    options = dict(attention_mask=mask, labels=ids, output_hidden_states=True, output_attentions=True,
                   return_dict=False)
    with torch.no_grad():
        got, expected = ours(ids, **options), reference(ids, **options)
    assert isinstance(got, tuple) and len(got) == len(expected)
    torch.testing.assert_close(got[0], expected[0], rtol=0, atol=ATOL)  # the loss comes first
    torch.testing.assert_close(got[1], expected[1], rtol=0, atol=ATOL)
    assert got[2].get_seq_length() == expected[2].get_seq_length() == ids.shape[1]
    assert_same_tensors(got[3], expected[3])
    assert_same_tensors(got[4], expected[4])

    ours.config.return_dict = False  # the default follows the config
    with torch.no_grad():
        assert isinstance(ours(ids), tuple)


def test_output_indexes_like_model_output(folder):
    ours = AutoModelForCausalLM.from_pretrained(folder)
    ids, _ = left_padded_prompts()
    with torch.no_grad():
        out = ours(ids, use_cache=False)
        with_loss = ours(ids, labels=ids)
    assert list(out.keys()) == ["logits"] and "loss" not in out
    assert out.logits is out["logits"] is out[0] is out.to_tuple()[0]
    assert out.loss is None and out.cache is None and out.hidden_states is None
    assert with_loss[0] is with_loss.loss and with_loss[1] is with_loss.logits
    assert with_loss[1:] == with_loss.to_tuple()[1:]
    assert with_loss["past_key_values"] is with_loss.past_key_values is with_loss.cache
    assert "past_key_values" in with_loss and with_loss.get("cache") is with_loss.cache
    assert isinstance(with_loss, dict)
    copy = pickle.loads(pickle.dumps(out))
    assert list(copy.keys()) == ["logits"] and torch.equal(copy.logits, out.logits)
    with pytest.raises(TypeError):
        del out["logits"]


def test_logits_to_keep_as_count_and_as_indices(folder):
    ours, reference = load_pair(folder)
    ids, _ = left_padded_prompts()
    with torch.no_grad():
        full = ours(ids).logits
        for keep in (3, torch.tensor([0, 4])):
            torch.testing.assert_close(ours(ids, logits_to_keep=keep).logits,
                                       reference(ids, logits_to_keep=keep).logits, rtol=0, atol=ATOL)
        torch.testing.assert_close(ours(ids, logits_to_keep=2).logits, full[:, -2:], rtol=0, atol=0)


def test_inputs_embeds_match_input_ids_and_transformers(folder):
    ours, reference = load_pair(folder)
    ids, mask = left_padded_prompts()
    with torch.no_grad():
        embeds = ours.get_input_embeddings()(ids) * 1.5  # not an embedding row: only inputs_embeds can give it
        got = ours(inputs_embeds=embeds, attention_mask=mask, output_hidden_states=True)
        expected = reference(inputs_embeds=embeds, attention_mask=mask, output_hidden_states=True)
        torch.testing.assert_close(got.logits, expected.logits, rtol=0, atol=ATOL)
        assert_same_tensors(got.hidden_states, expected.hidden_states)
        plain = ours.get_input_embeddings()(ids)
        torch.testing.assert_close(ours(inputs_embeds=plain, attention_mask=mask).logits,
                                   ours(ids, attention_mask=mask).logits, rtol=0, atol=0)
    for arguments in ({"input_ids": ids, "inputs_embeds": embeds}, {}):
        with pytest.raises(ValueError, match="exactly one of input_ids or inputs_embeds"):
            ours(**arguments)


def test_base_model_forward_matches_transformers(folder):
    ours, reference = load_pair(folder, "eager")
    base, reference_base = getattr(ours, ours.base_model_prefix), reference.base_model
    ids, mask = long_prompts()
    with torch.no_grad():
        got = base(ids, attention_mask=mask, output_hidden_states=True, output_attentions=True)
        expected = reference_base(ids, attention_mask=mask, output_hidden_states=True, output_attentions=True)
        as_tuple = base(ids, attention_mask=mask, return_dict=False)
    assert type(got).__name__ == type(expected).__name__
    assert list(got.keys()) == list(expected.keys())
    torch.testing.assert_close(got.last_hidden_state, expected.last_hidden_state, rtol=0, atol=ATOL)
    assert_same_tensors(got.hidden_states, expected.hidden_states)
    assert_same_tensors(got.attentions, expected.attentions)
    assert isinstance(as_tuple, tuple) and len(as_tuple) == 2 and isinstance(as_tuple[1], KVCache)


def test_transformers_dynamic_cache_passed_in_is_read_and_extended(folder):
    # Fresh models for each run: Qwen3's dynamic RoPE keeps state between calls, in transformers as here.
    ids, mask = long_prompts()
    step_mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
    next_ids = torch.tensor([[5], [6]])
    with torch.no_grad():
        ours, reference = load_pair(folder)
        reference_cache = reference(ids, attention_mask=mask).cache
        expected = reference(next_ids, attention_mask=step_mask, cache=reference_cache).logits
        # A cache transformers filled, continued by warpload.
        ours, reference = load_pair(folder)
        filled = transformers.DynamicCache(config=reference.config)
        reference(ids, attention_mask=mask, cache=filled)
        continued = ours(next_ids, attention_mask=step_mask, past_key_values=filled)
        assert continued.cache is filled and filled.get_seq_length() == ids.shape[1] + 1
        torch.testing.assert_close(continued.logits, expected, rtol=0, atol=ATOL)
        # A cache warpload fills from empty (sliding-window layers too, when built from the config).
        for config in (reference.config, None):
            ours = AutoModelForCausalLM.from_pretrained(folder)
            empty = transformers.DynamicCache(config=config)
            ours(ids, attention_mask=mask, cache=empty)
            stepped = ours(next_ids, attention_mask=step_mask, cache=empty)
            assert stepped.cache is empty and empty.get_seq_length() == ids.shape[1] + 1
            torch.testing.assert_close(stepped.logits, expected, rtol=0, atol=ATOL)


def test_kv_cache_answers_dynamic_cache_calls(folder):
    ours, reference = load_pair(folder)
    ids, _ = left_padded_prompts()
    with torch.no_grad():
        cache = ours(ids).cache
        reference_cache = reference(ids).cache
    assert isinstance(cache, KVCache)
    assert len(cache) == len(reference_cache) == ours.config.num_hidden_layers
    assert cache.get_seq_length() == reference_cache.get_seq_length() == ids.shape[1]
    for (key, value, window), (reference_key, reference_value, _) in zip(cache, reference_cache):
        # A sliding-window layer of transformers' cache keeps only the window's last keys; warpload's keeps all.
        kept = reference_key.shape[-2]
        torch.testing.assert_close(key[..., -kept:, :], reference_key, rtol=0, atol=ATOL)
        torch.testing.assert_close(value[..., -kept:, :], reference_value, rtol=0, atol=ATOL)
        assert window is None
    legacy = cache.to_legacy_cache()
    assert len(legacy) == len(cache) and all(len(pair) == 2 for pair in legacy)
    rebuilt = KVCache.from_legacy_cache(cache.to_legacy_cache())
    next_ids = torch.tensor([[5], [6]])
    with torch.no_grad():
        torch.testing.assert_close(ours(next_ids, cache=rebuilt).logits, ours(next_ids, cache=cache).logits,
                                   rtol=0, atol=ATOL)
    assert rebuilt.get_seq_length() == ids.shape[1] + 1


def test_forward_refuses_two_caches_and_unknown_keywords(folder):
    ours = AutoModelForCausalLM.from_pretrained(folder)
    ids, _ = left_padded_prompts()
    with pytest.raises(ValueError, match="both `cache` and `past_key_values`"):
        ours(ids, cache=KVCache(), past_key_values=KVCache())
    with pytest.raises(TypeError, match="num_items_in_bach"):
        ours(ids, labels=ids, num_items_in_bach=3)
    with torch.no_grad():  # accepted for transformers 4 callers, unused as in transformers 5
        torch.testing.assert_close(ours(ids, cache_position=torch.arange(ids.shape[1])).logits, ours(ids).logits,
                                   rtol=0, atol=0)


@pytest.mark.parametrize("implementation", ["flash_attention_2", "flash_attention_3"])
def test_flash_attention_without_its_package_raises_transformers_error(folder, implementation):
    from warpload.errors import AttentionUnavailableError
    from warpload.loading.build import FLASH_ATTENTION_MODULES

    if importlib.util.find_spec(FLASH_ATTENTION_MODULES[implementation][1]) is not None:
        pytest.skip(f"the package for {implementation} is installed: transformers' class runs it")
    with pytest.raises(ImportError) as expected:
        transformers.AutoModelForCausalLM.from_pretrained(folder, attn_implementation=implementation)
    for backend in ("auto", "transformers"):
        with pytest.raises(AttentionUnavailableError) as got:
            AutoModelForCausalLM.from_pretrained(folder, attn_implementation=implementation, backend=backend)
        assert str(got.value) == str(expected.value)
        assert isinstance(got.value, ImportError)


def test_forward_with_every_option_never_imports_transformers(tmp_path):
    folders = [os.fspath(save_checkpoint(tiny_transformers_model(arch), tmp_path / arch))
               for arch in ("gpt2", "mistral")]
    script = textwrap.dedent(f"""
        import sys, torch, warpload
        for folder in {folders!r}:
            model = warpload.AutoModelForCausalLM.from_pretrained(folder, attn_implementation="eager")
            ids = torch.tensor([[3, 4, 5, 6]])
            out = model(ids, labels=ids, output_hidden_states=True, output_attentions=True)
            step = model(ids[:, :1], cache=out.cache, return_dict=False)
            model.generate(ids, max_new_tokens=3)
            assert out.loss is not None and len(out.attentions) == model.config.num_hidden_layers
        print("transformers" in sys.modules)
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "False"
