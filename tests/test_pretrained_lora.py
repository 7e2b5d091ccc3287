"""LoRA adapters on the built-in models against peft and transformers' load_adapter: an adapter folder or repo as
the model, load_adapter / set_adapter / disable_adapters / merge_and_unload, modules_to_save, rank and alpha
variants; the same keys and logits."""
from __future__ import annotations

import json

import pytest
import torch
import transformers

pytest.importorskip("peft", reason="peft, the oracle of these tests, is a test dependency (pip install peft)")
from peft import LoraConfig, PeftModel, get_peft_model  # noqa: E402

import warpload  # noqa: E402
from hub_repos import ADAPTER_REPO, MAIN_REPO  # noqa: E402
from hub_server import hub_fixture, hub_session_fixture  # noqa: E402,F401
from model_checkpoints import left_padded_prompts, save_checkpoint, tiny_transformers_model  # noqa: E402
from warpload.errors import UnsupportedFormatError  # noqa: E402

ADAPTERS = {
    "gpt2": dict(r=4, lora_alpha=16, target_modules=["c_attn", "c_fc"], fan_in_fan_out=True),
    "llama": dict(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"], modules_to_save=["lm_head"]),
    "qwen3-rslora": dict(r=8, lora_alpha=4, target_modules="all-linear", use_rslora=True,
                         alpha_pattern={"v_proj": 32}),
}


def _arch(name: str) -> str:
    return name.split("-")[0]


def write_adapter(tmp_path, name: str, seed: int = 0, base_folder=None):
    """(base folder, adapter folder) for ADAPTERS[name], with random B matrices (peft starts them at zero)."""
    base_folder = base_folder or save_checkpoint(tiny_transformers_model(_arch(name)), tmp_path / f"{name}-base")
    base = transformers.AutoModelForCausalLM.from_pretrained(base_folder)
    adapted = get_peft_model(base, LoraConfig(**ADAPTERS[name]))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter_name, parameter in adapted.named_parameters():
            if "lora_B" in parameter_name or "modules_to_save" in parameter_name:
                parameter.add_(torch.randn(parameter.shape, generator=generator) * 0.2)
    folder = tmp_path / f"{name}-adapter-{seed}"
    adapted.save_pretrained(folder)
    config = json.loads((folder / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = str(base_folder)
    (folder / "adapter_config.json").write_text(json.dumps(config))
    return base_folder, folder


def logits(model):
    ids, mask = left_padded_prompts()
    with torch.no_grad():
        return model(ids, attention_mask=mask).logits


@pytest.mark.parametrize("name", sorted(ADAPTERS))
def test_adapter_folder_as_the_model_equals_transformers_and_peft(tmp_path, name):
    base_folder, folder = write_adapter(tmp_path, name)
    ours = warpload.AutoModelForCausalLM.from_pretrained(folder)
    theirs = transformers.AutoModelForCausalLM.from_pretrained(folder)
    peft_model = PeftModel.from_pretrained(transformers.AutoModelForCausalLM.from_pretrained(base_folder), folder)
    assert type(ours).__module__.startswith("warpload.")
    assert set(ours.state_dict()) == set(theirs.state_dict())
    torch.testing.assert_close(logits(ours), logits(theirs), rtol=0, atol=0)
    torch.testing.assert_close(logits(ours), logits(peft_model.eval()), rtol=0, atol=0)
    assert ours.active_adapters() == ["default"]
    assert not torch.equal(logits(ours), logits(warpload.AutoModelForCausalLM.from_pretrained(base_folder)))


def test_bf16_adapters_compute_as_transformers_does(tmp_path):
    _, folder = write_adapter(tmp_path, "llama")
    ours = warpload.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.bfloat16)
    theirs = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.bfloat16)
    for key, tensor in theirs.state_dict().items():
        assert ours.state_dict()[key].dtype == tensor.dtype, key
    torch.testing.assert_close(logits(ours), logits(theirs), rtol=0, atol=0)


@pytest.mark.parametrize("name", sorted(ADAPTERS))
def test_merge_and_unload_equals_peft(tmp_path, name):
    base_folder, folder = write_adapter(tmp_path, name)
    ours = warpload.AutoModelForCausalLM.from_pretrained(folder).merge_and_unload()
    theirs = PeftModel.from_pretrained(transformers.AutoModelForCausalLM.from_pretrained(base_folder),
                                       folder).merge_and_unload()
    assert set(ours.state_dict()) == set(theirs.state_dict())
    for key, tensor in theirs.state_dict().items():
        assert torch.equal(ours.state_dict()[key], tensor), key
    torch.testing.assert_close(logits(ours), logits(theirs), rtol=0, atol=0)


def test_load_set_disable_enable_adapters(tmp_path):
    base_folder, first = write_adapter(tmp_path, "llama", seed=0)
    _, second = write_adapter(tmp_path, "llama", seed=1, base_folder=base_folder)
    ours = warpload.AutoModelForCausalLM.from_pretrained(base_folder)
    ours.load_adapter(first, adapter_name="one")
    ours.load_adapter(second, adapter_name="two")
    # peft as the oracle: transformers 5.24's own load_adapter needs peft >= 0.22, which PyPI does not have yet.
    theirs = PeftModel.from_pretrained(transformers.AutoModelForCausalLM.from_pretrained(base_folder), first,
                                       adapter_name="one")
    theirs.load_adapter(second, adapter_name="two")
    theirs.eval()
    for active in ("one", "two"):
        ours.set_adapter(active)
        theirs.set_adapter(active)
        assert ours.active_adapters() == [active]
        torch.testing.assert_close(logits(ours), logits(theirs), rtol=0, atol=0)
    ours.disable_adapters()
    base = warpload.AutoModelForCausalLM.from_pretrained(base_folder)
    torch.testing.assert_close(logits(ours), logits(base), rtol=0, atol=0)
    with theirs.disable_adapter():
        torch.testing.assert_close(logits(theirs), logits(base), rtol=0, atol=0)
    ours.enable_adapters()
    torch.testing.assert_close(logits(ours), logits(theirs), rtol=0, atol=0)
    with pytest.raises(ValueError, match="Adapter with name one already exists"):
        ours.load_adapter(first, adapter_name="one")
    with pytest.raises(ValueError, match="Adapter with name three not found"):
        ours.set_adapter("three")


def test_adapter_name_option_names_the_layers(tmp_path):
    _, folder = write_adapter(tmp_path, "gpt2")
    model = warpload.AutoModelForCausalLM.from_pretrained(folder, adapter_name="mine")
    assert model.active_adapters() == ["mine"]
    assert any(".lora_A.mine." in key for key in model.state_dict())


@pytest.mark.parametrize(("setting", "value"), [("use_dora", True), ("bias", "all"), ("peft_type", "IA3")])
def test_unsupported_adapter_settings_are_refused_naming_them(tmp_path, setting, value):
    _, folder = write_adapter(tmp_path, "gpt2")
    config = json.loads((folder / "adapter_config.json").read_text())
    config[setting] = value
    (folder / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(UnsupportedFormatError, match=setting if setting != "peft_type" else "IA3"):
        warpload.AutoModelForCausalLM.from_pretrained(folder)


def test_adapter_repo_on_the_hub_loads_its_base_repo(hub, tmp_path):
    ours = warpload.AutoModelForCausalLM.from_pretrained(ADAPTER_REPO, cache_dir=tmp_path)
    theirs = transformers.AutoModelForCausalLM.from_pretrained(ADAPTER_REPO, cache_dir=tmp_path / "transformers")
    torch.testing.assert_close(logits(ours), logits(theirs), rtol=0, atol=0)
    base = warpload.AutoModelForCausalLM.from_pretrained(MAIN_REPO, cache_dir=tmp_path)
    base.load_adapter(ADAPTER_REPO, cache_dir=tmp_path)
    torch.testing.assert_close(logits(base), logits(theirs), rtol=0, atol=0)
