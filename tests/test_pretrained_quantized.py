"""Pre-quantized checkpoints never load silently wrong: from_pretrained refuses those it cannot dequantize (every
method but FineGrainedFP8, tests/test_pretrained_fp8.py), naming the method, before the engine reads a weight."""
from __future__ import annotations

import json

import pytest
import torch
import transformers

import warpload
from warpload.errors import UnsupportedFormatError
from warpload.loading import pretrained

from model_checkpoints import save_checkpoint, tiny_transformers_model, write_raw_checkpoint

# quantization_config blocks as each method's tools write them into config.json (fields trimmed to the ones that
# name the method and its layout).
QUANTIZATION_CONFIGS = {
    "gptq": {"quant_method": "gptq", "bits": 4, "group_size": 128, "desc_act": False, "sym": True},
    "awq": {"quant_method": "awq", "bits": 4, "group_size": 128, "zero_point": True, "version": "gemm"},
    "bitsandbytes": {"quant_method": "bitsandbytes", "load_in_4bit": True, "bnb_4bit_quant_type": "nf4"},
    "fbgemm_fp8": {"quant_method": "fbgemm_fp8", "activation_scale_ub": 1200.0},
    "compressed-tensors": {"quant_method": "compressed-tensors", "format": "pack-quantized",
                           "config_groups": {"group_0": {"targets": ["Linear"], "weights": {"num_bits": 4}}}},
    "torchao": {"quant_method": "torchao", "quant_type": {"default": {"_type": "Int8WeightOnlyConfig"}}},
}


@pytest.fixture(scope="module")
def llama_folder(tmp_path_factory):
    return save_checkpoint(tiny_transformers_model("llama"), tmp_path_factory.mktemp("llama"))


def _with_quantization(folder, tmp_path, quantization):
    target = tmp_path / "quantized"
    target.mkdir()
    for item in folder.iterdir():
        (target / item.name).write_bytes(item.read_bytes())
    config = json.loads((target / "config.json").read_text())
    config["quantization_config"] = quantization
    (target / "config.json").write_text(json.dumps(config))
    return target


@pytest.fixture
def no_engine_reads(monkeypatch):
    """Fails the test if from_pretrained reaches the point where records are read."""
    def refuse(*args, **kwargs):
        raise AssertionError("the checkpoint's records were read before the quantization check")

    monkeypatch.setattr(pretrained, "checkpoint_records", refuse)


@pytest.mark.parametrize("backend", ["auto", "transformers"])
@pytest.mark.parametrize("method", sorted(QUANTIZATION_CONFIGS))
def test_quantized_config_is_refused_before_any_read(llama_folder, tmp_path, method, backend, no_engine_reads):
    folder = _with_quantization(llama_folder, tmp_path, QUANTIZATION_CONFIGS[method])
    with pytest.raises(UnsupportedFormatError, match=rf"quant_method='{method}'") as caught:
        warpload.AutoModelForCausalLM.from_pretrained(folder, backend=backend)
    message = str(caught.value)
    assert "transformers.AutoModelForCausalLM.from_pretrained" in message
    assert "randomly initialised" in message
    assert caught.value.path == str(folder)


def test_quantization_config_without_method_is_refused(llama_folder, tmp_path):
    folder = _with_quantization(llama_folder, tmp_path, {"bits": 4})
    with pytest.raises(UnsupportedFormatError, match="quant_method='unknown'"):
        warpload.AutoModelForCausalLM.from_pretrained(folder)


def test_quantized_config_object_is_refused(llama_folder):
    config = transformers.AutoConfig.from_pretrained(llama_folder)
    config.quantization_config = dict(QUANTIZATION_CONFIGS["gptq"])
    with pytest.raises(UnsupportedFormatError, match="quant_method='gptq'"):
        warpload.AutoModelForCausalLM.from_pretrained(llama_folder, config=config)


@pytest.mark.parametrize("suffix", ["qweight", "qzeros", "weight_scale_inv", "SCB", "weight_packed"])
def test_quantized_tensors_without_config_are_refused(tmp_path, suffix):
    model = tiny_transformers_model("llama")
    tensors = dict(model.state_dict())
    tensors[f"model.layers.0.self_attn.q_proj.{suffix}"] = torch.zeros(4, 4, dtype=torch.int32)
    folder = write_raw_checkpoint(tmp_path / "ckpt", model.config, tensors)
    with pytest.raises(UnsupportedFormatError, match=rf"q_proj\.{suffix}") as caught:
        warpload.AutoModelForCausalLM.from_pretrained(folder)
    assert caught.value.tensor == f"model.layers.0.self_attn.q_proj.{suffix}"
    assert "no quantization_config" in str(caught.value)


def test_a_plain_checkpoint_still_loads_with_no_missing_keys(llama_folder):
    model, info = warpload.AutoModelForCausalLM.from_pretrained(llama_folder, output_loading_info=True)
    assert len(info["missing_keys"]) == 0
    assert len(info["unexpected_keys"]) == 0
    assert isinstance(model, torch.nn.Module)
