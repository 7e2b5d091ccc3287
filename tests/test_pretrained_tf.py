"""from_pretrained(from_tf=True): TF checkpoints give the same model as transformers' converted PyTorch checkpoint."""
from __future__ import annotations

import importlib.util
import json
import shutil

import pytest
import torch

pytest.importorskip("transformers")
import transformers  # noqa: E402

from conftest import FIXTURES, same_bits  # noqa: E402
from warpload import AutoModelForCausalLM  # noqa: E402

TF = FIXTURES / "tf"
H5_REFERENCE = TF / "pt_gpt2_from_h5"
TF1_REFERENCE = TF / "pt_gpt2model_from_tf1"
needs_h5py = pytest.mark.skipif(importlib.util.find_spec("h5py") is None, reason="h5py is not installed")
IDS = torch.tensor([[1, 5, 77, 900, 3, 4, 999, 0]])


def reference_logits(folder):
    model = transformers.GPT2LMHeadModel.from_pretrained(folder).eval()
    with torch.no_grad():
        return model(IDS).logits


def logits(model):
    with torch.no_grad():
        return model(IDS).logits


# Folders without config.json (TF bundles as TF writes them) take the reference's config.
CASES = [pytest.param("tf_gpt2_h5", {}, marks=needs_h5py), pytest.param("tf_gpt2_h5_sharded", {}, marks=needs_h5py),
         pytest.param("tf_gpt2_safetensors", {}),
         pytest.param("tf2_gpt2_checkpoint", {"config": H5_REFERENCE}),
         pytest.param("tf2_gpt2_keras_save_weights", {"config": H5_REFERENCE})]


@pytest.mark.parametrize("backend", ["warpload", "transformers"])
@pytest.mark.parametrize("folder, options", CASES)
def test_logits_equal_transformers_from_the_converted_checkpoint(folder, options, backend):
    model, info = AutoModelForCausalLM.from_pretrained(TF / folder, from_tf=True, backend=backend,
                                                       output_loading_info=True, **options)
    assert torch.equal(logits(model), reference_logits(H5_REFERENCE))
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    assert model.lm_head.weight.data_ptr() == model.transformer.wte.weight.data_ptr()


def test_tf_safetensors_take_the_tf_path_without_from_tf():
    model = AutoModelForCausalLM.from_pretrained(TF / "tf_gpt2_safetensors")
    assert torch.equal(logits(model), reference_logits(H5_REFERENCE))


@needs_h5py
def test_dtype_applies_to_tf_weights():
    model = AutoModelForCausalLM.from_pretrained(TF / "tf_gpt2_h5", from_tf=True, dtype=torch.bfloat16)
    reference = transformers.GPT2LMHeadModel.from_pretrained(H5_REFERENCE, dtype=torch.bfloat16)
    for name, tensor in reference.state_dict().items():
        assert same_bits(model.state_dict()[name], tensor), name


@needs_h5py
def test_tf_weights_are_preferred_with_from_tf(tmp_path):
    folder = tmp_path / "both"
    shutil.copytree(TF / "tf_gpt2_h5", folder)
    torch_model = transformers.GPT2LMHeadModel.from_pretrained(H5_REFERENCE)
    with torch.no_grad():
        torch_model.transformer.ln_f.bias.add_(1.0)
    torch_model.save_pretrained(folder)
    assert torch.equal(logits(AutoModelForCausalLM.from_pretrained(folder, from_tf=True)),
                       reference_logits(H5_REFERENCE))
    assert torch.equal(logits(AutoModelForCausalLM.from_pretrained(folder)), logits(torch_model.eval()))


@pytest.mark.parametrize("folder", ["tf1_gpt2_ckpt", "tf1_gpt2_ckpt_2shards"])
@pytest.mark.parametrize("backend", ["warpload", "transformers"])
def test_openai_tf1_checkpoint_loads_into_the_lm_head_model(folder, backend):
    # transformers fails here ('GPT2LMHeadModel' object has no attribute 'h', formats.md 5.5); the base-model
    # names gain the `transformer.` prefix and lm_head is tied to the embeddings. The TF1 fixtures hold the
    # same weights as the h5 one, so the model equals transformers' converted h5 checkpoint.
    model, info = AutoModelForCausalLM.from_pretrained(TF / folder, from_tf=True, config=TF1_REFERENCE,
                                                       backend=backend, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert model.lm_head.weight.data_ptr() == model.transformer.wte.weight.data_ptr()
    assert torch.equal(logits(model), reference_logits(H5_REFERENCE))


def test_openai_release_folder_needs_no_config_json():
    # OpenAI's release ships hparams.json, not config.json; transformers needs the latter.
    model = AutoModelForCausalLM.from_pretrained(TF / "tf1_gpt2_ckpt", from_tf=True)
    assert (model.config.vocab_size, model.config.n_positions, model.config.n_layer) == (1000, 128, 2)
    assert torch.equal(logits(model), reference_logits(H5_REFERENCE))


def test_malformed_hparams_json_is_a_header_error(tmp_path):
    from warpload.errors import HeaderError

    folder = tmp_path / "release"
    shutil.copytree(TF / "tf1_gpt2_ckpt", folder)
    (folder / "hparams.json").chmod(0o644)
    (folder / "hparams.json").write_text('{"n_vocab": 1000}')
    with pytest.raises(HeaderError, match="hparams.json"):
        AutoModelForCausalLM.from_pretrained(folder, from_tf=True)


@needs_h5py
def test_h5_datasets_read_through_h5py_fill_the_model_too(tmp_path):
    from test_keras_h5 import rewrite_chunked

    folder = tmp_path / "chunked"
    shutil.copytree(TF / "tf_gpt2_h5", folder)
    (folder / "tf_model.h5").unlink()
    rewrite_chunked(TF / "tf_gpt2_h5" / "tf_model.h5", folder / "tf_model.h5")
    model = AutoModelForCausalLM.from_pretrained(folder, from_tf=True)
    assert torch.equal(logits(model), reference_logits(H5_REFERENCE))


def test_sharded_tf_safetensors_take_the_tf_path(tmp_path):
    from safetensors.torch import load_file, save_file

    folder = tmp_path / "sharded"
    folder.mkdir()
    shutil.copy(TF / "tf_gpt2_safetensors" / "config.json", folder)
    tensors = load_file(TF / "tf_gpt2_safetensors" / "model.safetensors")
    names = sorted(tensors)
    weight_map = {}
    for number, part in enumerate((names[:10], names[10:]), start=1):
        shard = f"model-0000{number}-of-00002.safetensors"
        save_file({name: tensors[name] for name in part}, folder / shard, metadata={"format": "tf"})
        weight_map.update(dict.fromkeys(part, shard))
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    model = AutoModelForCausalLM.from_pretrained(folder)
    assert torch.equal(logits(model), reference_logits(H5_REFERENCE))
