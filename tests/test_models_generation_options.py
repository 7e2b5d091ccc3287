"""generate() options of the built-in models against transformers' generate: beams, processors, stopping, outputs."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("tokenizers")
import transformers  # noqa: E402

from model_checkpoints import generate_both as generate_pair  # noqa: E402
from model_checkpoints import left_padded_prompts, save_checkpoint, tiny_transformers_model  # noqa: E402
from warpload import AutoModelForCausalLM  # noqa: E402


def load_pair(arch, folder):
    folder = save_checkpoint(tiny_transformers_model(arch, seed=7), folder)
    return AutoModelForCausalLM.from_pretrained(folder), transformers.AutoModelForCausalLM.from_pretrained(folder)


# Llama for every option; GPT-2 (its own attention and cache path) for beams and penalties together.
@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return load_pair("llama", tmp_path_factory.mktemp("llama"))


@pytest.fixture(scope="module")
def gpt2_models(tmp_path_factory):
    return load_pair("gpt2", tmp_path_factory.mktemp("gpt2"))


def generate_both(models, seed=0, **options):
    """Both models' generate on the same left-padded batch, 10 new tokens unless told."""
    return generate_pair(models, seed, **{"max_new_tokens": 10, **options})


def greedy_eos(models):
    """A token the model emits early on the first prompt: an eos that really stops a row."""
    ours, _ = models
    ids, mask = left_padded_prompts()
    return int(ours.generate(ids, attention_mask=mask, max_new_tokens=4, pad_token_id=0)[0, ids.shape[1] + 2])


def assert_same_outputs(got, expected, fields):
    for field in fields:
        ours, theirs = getattr(got, field), getattr(expected, field)
        if isinstance(theirs, tuple):
            assert len(ours) == len(theirs), field
            for step, (a, b) in enumerate(zip(ours, theirs)):
                torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4, msg=f"{field}[{step}]")
        elif theirs.is_floating_point():
            torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=1e-4, msg=field)
        else:
            assert ours.tolist() == theirs.tolist(), field


@pytest.mark.parametrize("options", [
    {"num_beams": 4, "num_return_sequences": 2, "length_penalty": 0.5},
    {"num_beams": 3, "early_stopping": True, "eos": True},
    {"num_beams": 3, "early_stopping": "never", "length_penalty": 2.0, "eos": True},
    {"num_beams": 2, "eos": True, "use_cache": False},
], ids=["return-2-penalty", "early-stop-eos", "never-eos", "no-cache"])
def test_beam_search_matches_transformers_with_scores_and_beam_indices(models, options):
    options = dict(options)
    if options.pop("eos", False):
        options["eos_token_id"] = [greedy_eos(models), 3]
    got, expected = generate_both(models, return_dict_in_generate=True, output_scores=True, output_logits=True,
                                  **options)
    assert_same_outputs(got, expected, ["sequences", "sequences_scores", "beam_indices", "scores", "logits"])


def test_gpt2_beams_with_penalties_match_transformers(gpt2_models):
    options = dict(num_beams=3, num_return_sequences=2, repetition_penalty=1.3, no_repeat_ngram_size=2,
                   eos_token_id=[greedy_eos(gpt2_models), 3], return_dict_in_generate=True, output_scores=True)
    got, expected = generate_both(gpt2_models, **options)
    assert_same_outputs(got, expected, ["sequences", "sequences_scores", "beam_indices", "scores"])


def test_beam_sampling_draws_what_transformers_draws(models):
    got, expected = generate_both(models, num_beams=3, do_sample=True, top_k=10, seed=5)
    assert got.tolist() == expected.tolist()


@pytest.mark.parametrize("options", [
    {"repetition_penalty": 1.8},
    {"no_repeat_ngram_size": 2},
    {"bad_words_ids": [[5], [7, 8], [9, 10, 11]], "sequence_bias": {(6,): -2.0, (7, 9): 3.0}},
    {"min_new_tokens": 6, "eos": True},
    {"min_length": 14, "eos": True},
    {"renormalize_logits": True, "repetition_penalty": 0.7},
], ids=["repetition", "ngram", "bad-words-and-bias", "min-new-tokens-eos-list", "min-length", "renormalize"])
def test_greedy_processors_match_transformers(models, options):
    options = dict(options)
    if options.pop("eos", False):
        options["eos_token_id"] = [greedy_eos(models), 4]
    got, expected = generate_both(models, **options)
    assert got.tolist() == expected.tolist()


@pytest.mark.parametrize("options", [{"min_p": 0.2}, {"typical_p": 0.6},
                                     {"temperature": 0.8, "top_k": 8, "top_p": 0.7, "repetition_penalty": 1.4}],
                         ids=["min_p", "typical_p", "chain-with-penalty"])
def test_sampling_options_draw_what_transformers_draws(models, options):
    got, expected = generate_both(models, do_sample=True, seed=3, return_dict_in_generate=True, output_scores=True,
                                  output_logits=True, **options)
    assert_same_outputs(got, expected, ["sequences", "scores", "logits"])


@pytest.mark.parametrize("options", [{"top_k": 7}, {"top_p": 0.6}, {"min_p": 0.3}, {"typical_p": 0.5},
                                     {"temperature": 0.5, "top_k": 20, "top_p": 0.9}],
                         ids=["top_k", "top_p", "min_p", "typical_p", "chain"])
def test_sampling_masks_equal_transformers_warpers(options):
    from transformers.generation import (MinPLogitsWarper, TemperatureLogitsWarper, TopKLogitsWarper,
                                         TopPLogitsWarper, TypicalLogitsWarper)

    from warpload import GenerationConfig
    from warpload.models.logits_processors import sampling_warpers

    scores = torch.randn(6, 300, generator=torch.Generator().manual_seed(0)) * 3
    config = GenerationConfig(do_sample=True, num_beams=1, **options)
    ours = scores
    for warper in sampling_warpers(config, torch.tensor([2])):
        ours = warper(None, ours)
    theirs = scores
    classes = {"temperature": TemperatureLogitsWarper, "top_k": TopKLogitsWarper, "top_p": TopPLogitsWarper,
               "min_p": MinPLogitsWarper, "typical_p": TypicalLogitsWarper}
    for name, value in options.items():
        theirs = classes[name](value)(None, theirs)
    assert torch.equal(torch.isinf(ours), torch.isinf(theirs))
    torch.testing.assert_close(ours, theirs)


def test_transformers_processor_and_criteria_objects_are_accepted(models):
    from transformers.generation import (LogitsProcessorList, MaxLengthCriteria, NoBadWordsLogitsProcessor,
                                         StoppingCriteriaList)

    ids, _ = left_padded_prompts()
    options = dict(logits_processor=LogitsProcessorList([NoBadWordsLogitsProcessor([[5], [6]])]),
                   stopping_criteria=StoppingCriteriaList([MaxLengthCriteria(max_length=ids.shape[1] + 5)]),
                   max_new_tokens=20)
    got, expected = generate_both(models, **options)
    assert got.tolist() == expected.tolist() and got.shape[1] == ids.shape[1] + 5


class RecordingStreamer:
    """Records every put/end call, as a TextStreamer would receive them."""

    def __init__(self):
        self.calls = []

    def put(self, value):
        self.calls.append(("put", value.tolist()))

    def end(self):
        self.calls.append(("end",))


def test_streamer_receives_the_prompt_then_each_token(models):
    ours, theirs = models
    ids = left_padded_prompts()[0][:1]
    streamers = RecordingStreamer(), RecordingStreamer()
    for model, streamer in zip((ours, theirs), streamers):
        model.generate(ids, max_new_tokens=5, pad_token_id=0, streamer=streamer)
    assert streamers[0].calls == streamers[1].calls
    assert streamers[0].calls[0] == ("put", ids.tolist()) and len(streamers[0].calls) == 7


def test_text_iterator_streamer_yields_the_text(models, tokenizer):
    ours, theirs = models
    ids = left_padded_prompts()[0][:1]
    texts = []
    for model in (ours, theirs):
        streamer = transformers.TextIteratorStreamer(tokenizer, skip_prompt=True)
        model.generate(ids, max_new_tokens=6, pad_token_id=0, streamer=streamer)
        texts.append("".join(streamer))
    assert texts[0] == texts[1]


@pytest.fixture(scope="module")
def tokenizer():
    """A byte-level BPE tokenizer trained here (ids 0-127 cover what the tiny models emit)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    text = ["the stop string stops the story; stones and stems, a topper atop the tops"] * 20
    backend.train_from_iterator(text, trainers.BpeTrainer(vocab_size=400, initial_alphabet=pre_tokenizers.ByteLevel
                                                          .alphabet(), show_progress=False))
    return transformers.PreTrainedTokenizerFast(tokenizer_object=backend)


def ascii_stop_string(tokenizer, tokens):
    """The text of two consecutive generated tokens minus its first character: a stop string that starts inside
    one token and ends in the next (tokens whose bytes are not ASCII are skipped: their text is not theirs alone)."""
    for start in range(len(tokens) - 1):
        text = tokenizer.decode(tokens[start:start + 2])
        if len(text) >= 2 and text.isascii() and tokenizer.decode(tokens[start:start + 1]).isascii():
            return text[1:]
    return None


def test_stop_strings_stop_where_transformers_stops(models, tokenizer):
    ours, _ = models
    ids, mask = left_padded_prompts()
    free = ours.generate(ids, attention_mask=mask, max_new_tokens=12, pad_token_id=0)
    stop_strings = [s for s in (ascii_stop_string(tokenizer, row[ids.shape[1]:].tolist()) for row in free) if s]
    if not stop_strings:
        pytest.skip("this tiny model writes no two consecutive ASCII tokens to take a stop string from")
    got, expected = generate_both(models, stop_strings=stop_strings, tokenizer=tokenizer, max_new_tokens=12)
    assert got.tolist() == expected.tolist()
    assert got.shape[1] < free.shape[1] or not torch.equal(got, free)


def test_stop_strings_without_a_tokenizer_are_refused(models):
    ours, _ = models
    with pytest.raises(ValueError, match="tokenizer"):
        ours.generate(left_padded_prompts()[0], stop_strings=["a"])


def test_max_time_stops_after_the_first_token(models):
    ours, _ = models
    ids = left_padded_prompts()[0]
    assert ours.generate(ids, max_time=0.0, max_new_tokens=30, pad_token_id=0).shape[1] == ids.shape[1] + 1


def test_generation_config_json_defaults_apply_as_in_transformers(tmp_path):
    """A checkpoint shipping repetition_penalty and sampling settings (as chat models do): plain generate works."""
    model = tiny_transformers_model("qwen2")
    model.generation_config = transformers.GenerationConfig(repetition_penalty=1.5, no_repeat_ngram_size=2,
                                                            eos_token_id=[1, 2], bos_token_id=1, pad_token_id=0)
    folder = save_checkpoint(model, tmp_path)
    assert json.loads((folder / "generation_config.json").read_text())["repetition_penalty"] == 1.5
    pair = AutoModelForCausalLM.from_pretrained(folder), transformers.AutoModelForCausalLM.from_pretrained(folder)
    ids = left_padded_prompts()[0][:1]
    assert pair[0].generate(ids).tolist() == pair[1].generate(ids).tolist()
    got, expected = generate_both(pair, do_sample=True, temperature=0.7, top_p=0.8, seed=1)
    assert got.tolist() == expected.tolist()


def test_generate_imports_no_transformers(tmp_path):
    folder = save_checkpoint(tiny_transformers_model("llama"), tmp_path)
    script = f"""
import sys, torch, warpload
model = warpload.AutoModelForCausalLM.from_pretrained({str(folder)!r})
ids = torch.tensor([[5, 6, 7, 8]])
model.generate(ids, max_new_tokens=3, num_beams=2, repetition_penalty=1.2, no_repeat_ngram_size=2)
model.generate(ids, max_new_tokens=3, do_sample=True, top_p=0.9, min_p=0.1, return_dict_in_generate=True)
assert "transformers" not in sys.modules, sorted(m for m in sys.modules if m.startswith("transformers"))
"""
    subprocess.run([sys.executable, "-c", script], check=True, timeout=120)
