"""generate() of the built-in models against transformers' generate: sampling, stopping, padding, defaults."""
from __future__ import annotations

import pytest
import torch

pytest.importorskip("transformers")
import transformers  # noqa: E402

from model_checkpoints import generate_both as generate_pair  # noqa: E402
from model_checkpoints import left_padded_prompts, save_checkpoint, tiny_transformers_model  # noqa: E402
from warpload import AutoModelForCausalLM  # noqa: E402
from warpload.errors import GenerationOptionError, UnsupportedGenerationOptionError  # noqa: E402


@pytest.fixture(scope="module", params=["gpt2", "llama"])
def models(request, tmp_path_factory):
    folder = save_checkpoint(tiny_transformers_model(request.param), tmp_path_factory.mktemp(request.param))
    return AutoModelForCausalLM.from_pretrained(folder), transformers.AutoModelForCausalLM.from_pretrained(folder)


def generate_both(models, seed=0, **options):
    ours, theirs = generate_pair(models, seed, **options)
    return ours.tolist(), theirs.tolist()


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
    with pytest.raises(UnsupportedGenerationOptionError, match="diversity_penalty|num_beam_groups"):
        ours.generate(ids, num_beams=4, num_beam_groups=2, diversity_penalty=0.5)
    with pytest.raises(UnsupportedGenerationOptionError, match="assistant_model"):
        ours.generate(ids, assistant_model=ours)
    with pytest.raises(GenerationOptionError, match="foo"):
        ours.generate(ids, foo=1)


def one_token_samples(model, rows=4000, seed=0, **options):
    """The next token of one prompt sampled `rows` times, and the model's next-token probabilities."""
    ids = left_padded_prompts()[0][:1]
    with torch.no_grad():
        probabilities = torch.softmax(model(ids).logits[0, -1].float(), dim=-1)
    generator = torch.Generator().manual_seed(seed)
    tokens = model.generate(ids.expand(rows, -1), max_new_tokens=1, do_sample=True, pad_token_id=0,
                            generator=generator, **options)[:, -1]
    return tokens, probabilities


def test_sampling_from_a_generator_is_reproducible(models):
    ours, _ = models
    first, _ = one_token_samples(ours, rows=64, seed=3)
    again, _ = one_token_samples(ours, rows=64, seed=3)
    other, _ = one_token_samples(ours, rows=64, seed=4)
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


def test_sampled_tokens_follow_the_model_distribution(models):
    ours, _ = models
    tokens, probabilities = one_token_samples(ours, top_k=0, top_p=1.0)
    frequencies = torch.bincount(tokens, minlength=probabilities.numel()).float() / tokens.numel()
    # Total variation of 4,000 draws from the true distribution over 128 tokens stays well below 0.15.
    assert 0.5 * (frequencies - probabilities).abs().sum() < 0.15


@pytest.mark.parametrize("options", [{"top_k": 5}, {"top_p": 0.3}], ids=["top_k", "top_p"])
def test_sampling_filters_keep_only_the_likely_tokens(models, options):
    ours, _ = models
    tokens, probabilities = one_token_samples(ours, rows=500, **options)
    ranked = torch.argsort(probabilities, descending=True)
    if "top_k" in options:
        allowed = set(ranked[:5].tolist())
    else:
        cumulative = torch.cumsum(probabilities[ranked], dim=0)
        allowed = set(ranked[: int((cumulative < 0.3).sum()) + 1].tolist())
    assert set(tokens.tolist()) <= allowed
    assert len(set(tokens.tolist())) > 1
