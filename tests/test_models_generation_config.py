"""warpload.GenerationConfig reads and writes generation_config.json as transformers' GenerationConfig does."""
from __future__ import annotations

import json

import pytest

pytest.importorskip("transformers")
import transformers  # noqa: E402

import warpload  # noqa: E402
from warpload.errors import CheckpointNotFoundError, GenerationOptionError  # noqa: E402
from warpload.models.config import LlamaConfig  # noqa: E402

FIELDS = dict(do_sample=True, temperature=0.6, top_p=0.9, repetition_penalty=1.1, eos_token_id=[1, 2],
              bos_token_id=1, pad_token_id=0, max_new_tokens=64, num_beams=2, stop_strings=["\n\n"],
              bad_words_ids=[[5], [6, 7]], custom_field="kept")


def test_save_pretrained_writes_what_transformers_writes(tmp_path):
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    warpload.GenerationConfig(**FIELDS).save_pretrained(ours)
    transformers.GenerationConfig(**FIELDS).save_pretrained(theirs)
    written = json.loads((ours / "generation_config.json").read_text())
    expected = json.loads((theirs / "generation_config.json").read_text())
    expected.pop("transformers_version")
    assert written == expected
    assert transformers.GenerationConfig.from_pretrained(ours) == transformers.GenerationConfig(**FIELDS)


def test_from_pretrained_reads_what_transformers_saved(tmp_path):
    transformers.GenerationConfig(**FIELDS).save_pretrained(tmp_path)
    config = warpload.GenerationConfig.from_pretrained(tmp_path, top_k=7)
    assert (config.temperature, config.eos_token_id, config.custom_field, config.top_k) == (0.6, [1, 2], "kept", 7)
    assert config.min_p is None  # unset fields stay None, as in transformers 5
    assert json.loads(config.to_json_string()) == json.loads(transformers.GenerationConfig.from_pretrained(
        tmp_path, top_k=7).to_json_string())
    # As in transformers, unknown keywords become custom entries, so nothing is left unused.
    config, unused = warpload.GenerationConfig.from_pretrained(tmp_path, top_k=3, extra=1, return_unused_kwargs=True)
    assert (config.top_k, config.extra, unused) == (3, 1, {})


def test_to_dict_and_update_behave_as_in_transformers():
    ours, theirs = warpload.GenerationConfig(**FIELDS), transformers.GenerationConfig(**FIELDS)
    expected = {key: value for key, value in theirs.to_dict().items() if key != "transformers_version"}
    assert {key: value for key, value in ours.to_dict().items() if key != "transformers_version"} == expected
    assert ours.update(top_k=5, temperature=None, unknown=3) == theirs.update(top_k=5, temperature=None, unknown=3)
    ours.update(top_k=9, min_p=0.1, defaults_only=True)
    assert (ours.top_k, ours.min_p) == (5, 0.1)


def test_from_model_config_takes_the_token_ids():
    derived = warpload.GenerationConfig.from_model_config(LlamaConfig())
    assert (derived.bos_token_id, derived.eos_token_id, derived.pad_token_id) == (1, 2, None)
    assert transformers.GenerationConfig.from_model_config(transformers.LlamaConfig()).to_diff_dict()["eos_token_id"] \
        == derived.to_diff_dict()["eos_token_id"]


def test_missing_file_and_invalid_values_say_so(tmp_path):
    with pytest.raises(CheckpointNotFoundError, match="generation_config.json"):
        warpload.GenerationConfig.from_pretrained(tmp_path)
    with pytest.raises(GenerationOptionError, match="early_stopping"):
        warpload.GenerationConfig(early_stopping="sometimes")
    with pytest.raises(GenerationOptionError, match="num_return_sequences"):
        warpload.GenerationConfig(num_beams=2, num_return_sequences=3)
    with pytest.raises(GenerationOptionError, match="bad_words_ids"):
        warpload.GenerationConfig(bad_words_ids=[5, 6])


def test_model_generation_config_comes_from_the_checkpoint(tmp_path):
    from model_checkpoints import save_checkpoint, tiny_transformers_model

    model = tiny_transformers_model("gpt2")
    model.generation_config = transformers.GenerationConfig(repetition_penalty=1.3, eos_token_id=[2, 3])
    folder = save_checkpoint(model, tmp_path)
    loaded = warpload.AutoModelForCausalLM.from_pretrained(folder)
    assert isinstance(loaded.generation_config, warpload.GenerationConfig)
    assert (loaded.generation_config.repetition_penalty, loaded.generation_config.eos_token_id) == (1.3, [2, 3])
