"""The device_map planner (loading/planner.py) against transformers' _get_device_map and accelerate's
infer_auto_device_map: the same module sizes and budgets, fake GPU budgets included, give the same placement."""
from __future__ import annotations

import logging

import pytest
import torch
import transformers

from warpload.errors import DeviceMapError
from warpload.loading.module_tree import module_tree, no_split_classes, tied_groups
from warpload.loading.planner import ModuleNode, order_budgets, parse_size, plan_device_map
from warpload.models.config import config_for_model
from warpload.models.registry import CAUSAL_LM_CLASSES

accelerate = pytest.importorskip("accelerate", reason="accelerate (test extra) is the planner's oracle")
from accelerate.utils import convert_file_size_to_int  # noqa: E402
from transformers.integrations.accelerate import _get_device_map  # noqa: E402

_LLAMA = dict(hidden_size=64, intermediate_size=128, num_attention_heads=4, num_key_value_heads=2, vocab_size=500)
MODELS = {
    "gpt2": ("gpt2", dict(n_layer=4, n_embd=64, n_head=4, vocab_size=500, n_positions=64)),
    "llama": ("llama", dict(_LLAMA, num_hidden_layers=4, tie_word_embeddings=False)),
    "llama-tied": ("llama", dict(_LLAMA, num_hidden_layers=3, tie_word_embeddings=True)),
    "qwen2": ("qwen2", dict(_LLAMA, num_hidden_layers=3)),
}
# Budgets as fractions of the model's size: CPU only, one to three fake GPUs (this machine has none), the disk.
BUDGETS = [{"cpu": 2.0}, {"cpu": 0.5}, {"cpu": 0.05}, {0: 0.35, "cpu": 1.0}, {0: 0.25, 1: 0.25, "cpu": 0.35},
           {0: 0.5, 1: 0.5}, {0: 1.0, 1: 1.0, "cpu": 1.0}, {0: 0.1, "cpu": 0.1, "disk": 10},
           {0: 0.2, 1: 0.2, 2: 0.2, "cpu": 1.0}, {1: 0.3, 0: 0.3, "cpu": 0.2}, {0: 0.6, 1: 0.05, "cpu": 0.3}]


def meta_model(name: str, builtin: bool, dtype: torch.dtype = torch.float16) -> torch.nn.Module:
    model_type, fields = MODELS[name]
    with torch.device("meta"):
        if builtin:
            model = CAUSAL_LM_CLASSES[model_type](config_for_model(model_type, **fields))
        else:
            config = transformers.AutoConfig.for_model(model_type, **fields)
            return transformers.AutoModelForCausalLM.from_config(config, dtype=dtype)
    model.reset_buffers("cpu")  # what loading/placement.py does before planning a built-in model
    return model


@pytest.fixture(scope="module")
def hf_models():
    return {name: meta_model(name, builtin=False) for name in MODELS}


def budgets_for(model: torch.nn.Module, fractions: dict) -> dict:
    total = sum(p.numel() * p.element_size() for p in model.parameters())
    return {device: int(total * fraction) for device, fraction in fractions.items()}


def planned(model: torch.nn.Module, strategy: str, budgets: dict, dtype: torch.dtype = torch.float16) -> dict:
    return plan_device_map(module_tree(model, dtype), strategy, order_budgets(dict(budgets)), no_split_classes(model),
                           tied_groups(model))


@pytest.fixture(autouse=True)
def quiet_accelerate():
    # accelerate warns for every fake GPU index ("Device 0 is not available"); the placements are what is tested.
    logging.disable(logging.WARNING)
    yield
    logging.disable(logging.NOTSET)


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("strategy", ["auto", "balanced", "balanced_low_0", "sequential"])
@pytest.mark.parametrize("name", list(MODELS))
def test_placements_equal_transformers_get_device_map(hf_models, name, strategy):
    hf_model = hf_models[name]
    builtin = meta_model(name, builtin=True)
    for fractions in BUDGETS:
        budgets = budgets_for(hf_model, fractions)
        expected = dict(_get_device_map(hf_model, strategy, dict(budgets), None))
        assert planned(hf_model, strategy, budgets) == expected, (fractions, expected)
        assert planned(builtin, strategy, budgets) == expected, (fractions, expected)


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("name", list(MODELS))
def test_sequential_placements_equal_accelerate_infer_auto_device_map(hf_models, name):
    hf_model = hf_models[name]
    for fractions in BUDGETS:
        budgets = budgets_for(hf_model, fractions)
        expected = accelerate.infer_auto_device_map(hf_model, max_memory=dict(budgets),
                                                    no_split_module_classes=hf_model._no_split_modules)
        assert planned(hf_model, "sequential", budgets) == dict(expected), fractions


def test_sizes_count_the_target_dtype_and_tied_weights_once():
    model = meta_model("gpt2", builtin=True)
    tree = module_tree(model, torch.bfloat16)
    hf_model = meta_model("gpt2", builtin=False, dtype=torch.bfloat16)
    unique = {id(p): p for p in hf_model.parameters()}
    assert tree.size == sum(p.numel() * 2 for p in unique.values())
    assert tied_groups(model) == [["lm_head.weight", "transformer.wte.weight"]]
    assert no_split_classes(model) == frozenset({"GPT2Block"}) == frozenset(hf_model._no_split_modules)


def test_planner_needs_no_torch_model():
    # Two blocks of 40 bytes and a head of 30: a 100-byte CPU keeps 40 for the largest layer, so one block fits.
    blocks = tuple(ModuleNode(f"h.{i}", 40, "Block", (ModuleNode(f"h.{i}.w", 40),)) for i in range(2))
    root = ModuleNode("", 110, "Model", (), (ModuleNode("h", 80, "ModuleList", (), blocks),
                                             ModuleNode("head", 30, "Linear", (ModuleNode("head.w", 30),))))
    placement = plan_device_map(root, "sequential", {"cpu": 100}, frozenset({"Block"}), [[]])
    assert placement == {"h.0": "cpu", "h.1": "disk", "head": "disk"}


@pytest.mark.parametrize("size", ["20GiB", "1.5GB", "500MB", "3KiB", "2KB", "8Mb", "1gib", 1234])
def test_sizes_parse_as_accelerate_parses_them(size):
    assert parse_size(size) == convert_file_size_to_int(size)


@pytest.mark.parametrize("size", ["20", "lots", "-1GB", -5, "GiB"])
def test_bad_sizes_raise_as_accelerate_does(size):
    with pytest.raises(ValueError):
        convert_file_size_to_int(size)
    with pytest.raises(DeviceMapError, match="not in a valid format"):
        parse_size(size)


def test_budgets_are_ordered_and_unknown_devices_refused():
    assert list(order_budgets({"cpu": 1, 1: 2, "disk": 3, 0: 4})) == [0, 1, "cpu", "disk"]
    with pytest.raises(DeviceMapError, match="Device cuda:0 is not recognized"):
        order_budgets({"cuda:0": "1GB", "cpu": "1GB"})
    with pytest.raises(ValueError, match="Device cuda:0 is not recognized"):
        accelerate.utils.get_max_memory({"cuda:0": "1GB", "cpu": "1GB"})


def test_unknown_strategy_is_refused():
    with pytest.raises(DeviceMapError, match="balanced_low_0"):
        plan_device_map(ModuleNode("", 0, "Model"), "greedy", {"cpu": 1}, frozenset(), [[]])
