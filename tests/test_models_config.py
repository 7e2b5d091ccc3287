"""warpload's configs read and write config.json as transformers does; RoPE parameters and frequencies match it."""
from __future__ import annotations

import copy
import json

import pytest
import torch

pytest.importorskip("transformers")
import transformers  # noqa: E402
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS  # noqa: E402
from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding  # noqa: E402

from model_checkpoints import ROPE_VARIANTS, TINY_CONFIGS  # noqa: E402
from warpload import AutoConfig  # noqa: E402
from warpload.errors import CheckpointError, CheckpointNotFoundError  # noqa: E402
from warpload.models import config as configs  # noqa: E402
from warpload.models.rope import inverse_frequencies  # noqa: E402


def transformers_config(arch, **overrides):
    class_name, fields = TINY_CONFIGS[arch]
    return getattr(transformers, class_name)(**copy.deepcopy({**fields, **overrides}))


@pytest.mark.parametrize("arch", sorted(TINY_CONFIGS))
def test_reads_what_transformers_writes(arch, tmp_path):
    reference = transformers_config(arch)
    reference.save_pretrained(tmp_path)
    config = AutoConfig.from_pretrained(tmp_path)
    assert type(config) is configs.CONFIG_CLASSES[reference.model_type]
    ours = config.to_dict()
    for key, value in json.loads((tmp_path / "config.json").read_text()).items():
        if key != "transformers_version":
            assert ours[key] == value, key
    assert config.hidden_size == reference.hidden_size and config.num_hidden_layers == reference.num_hidden_layers


@pytest.mark.parametrize("arch", sorted(TINY_CONFIGS))
def test_transformers_reads_what_warpload_writes(arch, tmp_path):
    reference = transformers_config(arch)
    config = AutoConfig.for_model(**reference.to_dict())
    config.save_pretrained(tmp_path)
    reread = transformers.AutoConfig.from_pretrained(tmp_path)
    assert type(reread) is type(reference)
    ignored = {"transformers_version": None, "_name_or_path": None}
    assert reread.to_dict() | ignored == reference.to_dict() | ignored


def test_unknown_fields_are_kept_through_a_round_trip(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2", "n_layer": 3, "my_field": [1, 2],
                                                      "task_specific_params": {"x": {"y": 1}}}))
    config = AutoConfig.from_pretrained(tmp_path)
    assert config.my_field == [1, 2] and config.n_layer == 3 and config.num_hidden_layers == 3
    config.save_pretrained(tmp_path / "again")
    again = json.loads((tmp_path / "again" / "config.json").read_text())
    assert again["my_field"] == [1, 2] and again["task_specific_params"] == {"x": {"y": 1}}


def test_unknown_model_type_keeps_every_field(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt_neox", "rotary_pct": 0.25}))
    config = AutoConfig.from_pretrained(tmp_path)
    assert type(config) is configs.PretrainedConfig
    assert config.to_dict()["rotary_pct"] == 0.25 and config.model_type == "gpt_neox"


def test_attribute_map_aliases_read_and_write_the_real_field():
    config = configs.GPT2Config(hidden_size=32)
    assert config.n_embd == 32
    config.num_hidden_layers = 5
    assert config.n_layer == 5 and "num_hidden_layers" not in config.to_dict()


def test_overrides_are_consumed_as_transformers_consumes_them(tmp_path):
    transformers_config("gpt2").save_pretrained(tmp_path)
    ours, our_unused = AutoConfig.from_pretrained(tmp_path, n_layer=1, hidden_size=32, foo=2, return_unused_kwargs=True)
    theirs, their_unused = transformers.AutoConfig.from_pretrained(tmp_path, n_layer=1, hidden_size=32, foo=2,
                                                                   return_unused_kwargs=True)
    assert our_unused == their_unused == {"foo": 2}
    assert (ours.n_layer, ours.n_embd) == (theirs.n_layer, theirs.n_embd) == (1, 32)


@pytest.mark.parametrize("variant", sorted(ROPE_VARIANTS))
def test_legacy_rope_fields_standardise_like_transformers(variant):
    fields = {**TINY_CONFIGS["llama"][1], "rope_scaling": ROPE_VARIANTS[variant], "rope_theta": 5000.0}
    assert (configs.LlamaConfig(**copy.deepcopy(fields)).rope_parameters
            == transformers.LlamaConfig(**copy.deepcopy(fields)).rope_parameters)


@pytest.mark.parametrize("variant", sorted(ROPE_VARIANTS))
def test_inverse_frequencies_match_transformers(variant):
    fields = {**TINY_CONFIGS["llama"][1], "rope_scaling": ROPE_VARIANTS[variant], "rope_theta": 5000.0}
    reference = transformers.LlamaConfig(**copy.deepcopy(fields))
    ours, our_scale = inverse_frequencies(configs.LlamaConfig(**copy.deepcopy(fields)))
    rope_type = reference.rope_parameters["rope_type"]
    if rope_type == "default":
        theirs, their_scale = LlamaRotaryEmbedding.compute_default_rope_parameters(reference)
    else:
        theirs, their_scale = ROPE_INIT_FUNCTIONS[rope_type](reference)
    assert our_scale == their_scale
    assert torch.equal(ours, theirs)


def test_missing_model_type_raises_transformers_message(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ValueError, match="Should have a `model_type` key in its config.json"):
        AutoConfig.from_pretrained(tmp_path)


def test_missing_and_invalid_config_files_say_so(tmp_path):
    with pytest.raises(CheckpointNotFoundError, match="config.json"):
        AutoConfig.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        AutoConfig.from_pretrained(tmp_path)


def test_dtype_is_read_from_either_name(tmp_path):
    assert configs.GPT2Config(torch_dtype="bfloat16").dtype == "bfloat16"
    assert configs.GPT2Config(dtype="float16", torch_dtype="bfloat16").dtype == "float16"
    assert configs.GPT2Config(dtype=torch.float16).to_dict()["dtype"] == "float16"
