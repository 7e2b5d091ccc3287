"""generate() of the built-in models against transformers' generate: sampling, stopping, padding, defaults."""
from __future__ import annotations

import pytest
import torch

pytest.importorskip("transformers")
import transformers  # noqa: E402

from model_checkpoints import left_padded_prompts, save_checkpoint, tiny_transformers_model  # noqa: E402
from warpload import AutoModelForCausalLM  # noqa: E402


@pytest.fixture(scope="module", params=["gpt2", "llama"])
def models(request, tmp_path_factory):
    folder = save_checkpoint(tiny_transformers_model(request.param), tmp_path_factory.mktemp(request.param))
    return AutoModelForCausalLM.from_pretrained(folder), transformers.AutoModelForCausalLM.from_pretrained(folder)


def generate_both(models, seed=0, **options):
    ours, theirs = models
    ids, mask = left_padded_prompts()
    options = {"attention_mask": mask, "pad_token_id": 0, **options}
    torch.manual_seed(seed)
    expected = theirs.generate(ids, **options)
    torch.manual_seed(seed)
    return ours.generate(ids, **options).tolist(), expected.tolist()


@pytest.mark.parametrize("options", [{"temperature": 0.7}, {"top_k": 5}, {"top_p": 0.8},
                                     {"temperature": 1.3, "top_k": 20, "top_p": 0.9}],
                         ids=["temperature", "top_k", "top_p", "all"])
def test_sampling_draws_what_transformers_draws_from_the_same_seed(models, options):
    ours, theirs = generate_both(models, do_sample=True, max_new_tokens=15, **options)
    assert ours == theirs


def test_eos_stops_rows_and_pads_them(models):
    ours, theirs = models
    ids, mask = left_padded_prompts()
    greedy = ours.generate(ids, attention_mask=mask, max_new_tokens=6, pad_token_id=0)
    eos = int(greedy[0, ids.shape[1] + 2])
    got, expected = generate_both(models, max_new_tokens=10, eos_token_id=[eos, 3])
    assert got == expected
    assert eos in got[0][ids.shape[1]:]


def test_length_defaults_to_twenty_new_tokens(models):
    got, expected = generate_both(models, eos_token_id=None)
    assert got == expected and len(got[0]) == left_padded_prompts()[0].shape[1] + 20


def test_default_length_stops_at_max_position_embeddings(tmp_path):
    folder = save_checkpoint(tiny_transformers_model("qwen3"), tmp_path)
    got, expected = generate_both((AutoModelForCausalLM.from_pretrained(folder),
                                   transformers.AutoModelForCausalLM.from_pretrained(folder)))
    assert got == expected and len(got[0]) == 16


def test_attention_mask_is_inferred_from_pad_tokens(models):
    ours, theirs = models
    ids, _ = left_padded_prompts()
    expected = theirs.generate(ids, pad_token_id=0, eos_token_id=2, max_new_tokens=6, do_sample=False)
    assert ours.generate(ids, pad_token_id=0, eos_token_id=2, max_new_tokens=6).tolist() == expected.tolist()


def test_unsupported_and_unknown_options_are_refused(models):
    ours, _ = models
    ids, _ = left_padded_prompts()
    with pytest.raises(NotImplementedError, match="num_beams"):
        ours.generate(ids, num_beams=2)
    with pytest.raises(TypeError, match="foo"):
        ours.generate(ids, foo=1)
