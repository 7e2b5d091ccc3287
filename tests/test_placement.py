"""from_pretrained with device_map spreading the model (loading/placement.py, dispatch.py, offload.py): CPU and disk
placements give the in-memory model's logits and tokens, hf_device_map is transformers', errors come before reads."""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
import transformers
from torch import nn

from model_checkpoints import save_checkpoint, tiny_transformers_model
from warpload import AutoModelForCausalLM
from warpload.errors import DeviceMapError
from warpload.loading.offload import DiskOffload, attach_offload_hooks
from warpload.loading.placement import map_device, parse_device_map

pytest.importorskip("accelerate", reason="transformers' device_map='auto' (the oracle) needs accelerate")

IDS = torch.tensor([[1, 5, 7, 9, 11, 3]])
PREFIX = {"gpt2": "transformer.h", "llama": "model.layers"}
# Hand-made maps: the embeddings in memory, one block on the CPU, the other and the head on the disk.
MAPS = {
    "gpt2": {"transformer.wte": "cpu", "transformer.wpe": "cpu", "transformer.h.0": "cpu", "transformer.h.1": "disk",
             "transformer.ln_f": "disk", "lm_head": "cpu"},
    "llama": {"model.embed_tokens": "cpu", "model.layers.0": "disk", "model.layers.1": "cpu", "model.norm": "disk",
              "model.rotary_emb": "cpu", "lm_head": "disk"},
}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("placement")
    return {arch: save_checkpoint(tiny_transformers_model(arch), root / arch) for arch in ("gpt2", "llama")}


def outputs(model: nn.Module) -> tuple[torch.Tensor, list]:
    with torch.no_grad():
        logits = model(IDS).logits
    tokens = model.generate(IDS, max_new_tokens=6, do_sample=False, pad_token_id=0)
    return logits, tokens.tolist()


def parameter_devices(model: nn.Module) -> set[str]:
    return {parameter.device.type for parameter in model.parameters()}


@pytest.mark.parametrize("arch, backend", [("gpt2", "auto"), ("llama", "auto"), ("llama", "transformers")])
def test_cpu_and_disk_layers_give_the_in_memory_logits_and_tokens(checkpoints, arch, backend, tmp_path):
    expected = outputs(AutoModelForCausalLM.from_pretrained(checkpoints[arch], backend=backend))
    model = AutoModelForCausalLM.from_pretrained(checkpoints[arch], device_map=dict(MAPS[arch]), backend=backend,
                                                 offload_folder=str(tmp_path))
    assert parameter_devices(model) == {"cpu", "meta"}  # disk layers wait on meta between forwards
    logits, tokens = outputs(model)
    assert torch.equal(logits, expected[0]) and tokens == expected[1]
    assert model.hf_device_map == MAPS[arch]
    # float32 safetensors in float32: the disk layers are read straight from the checkpoint, nothing re-saved.
    assert not os.listdir(tmp_path)


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
@pytest.mark.parametrize("fraction", [0.3, 0.6, 2.0])
def test_auto_with_a_cpu_budget_places_as_transformers(checkpoints, arch, fraction, tmp_path):
    reference = transformers.AutoModelForCausalLM.from_pretrained(checkpoints[arch])
    budget = {"cpu": int(fraction * sum(p.numel() * 4 for p in reference.parameters()))}
    theirs = transformers.AutoModelForCausalLM.from_pretrained(checkpoints[arch], device_map="auto",
                                                               max_memory=dict(budget), offload_folder=str(tmp_path))
    ours = AutoModelForCausalLM.from_pretrained(checkpoints[arch], device_map="auto", max_memory=dict(budget),
                                                offload_folder=str(tmp_path))
    assert getattr(ours, "hf_device_map", None) == getattr(theirs, "hf_device_map", None)
    with torch.no_grad():
        torch.testing.assert_close(ours(IDS).logits, reference(IDS).logits, rtol=1e-5, atol=1e-5)


def test_a_map_accelerate_computed_is_honoured(checkpoints, tmp_path):
    import accelerate

    reference = transformers.AutoModelForCausalLM.from_pretrained(checkpoints["llama"])
    with accelerate.init_empty_weights():
        empty = transformers.AutoModelForCausalLM.from_config(reference.config)
    budget = sum(p.numel() * 4 for p in reference.parameters()) // 2
    device_map = accelerate.infer_auto_device_map(empty, max_memory={"cpu": budget},
                                                  no_split_module_classes=empty._no_split_modules)
    assert "disk" in device_map.values()
    model = AutoModelForCausalLM.from_pretrained(checkpoints["llama"], device_map=device_map,
                                                 offload_folder=str(tmp_path))
    assert model.hf_device_map == device_map
    with torch.no_grad():
        torch.testing.assert_close(model(IDS).logits, reference(IDS).logits, rtol=1e-5, atol=1e-5)


def test_the_machine_budget_is_transformers_share_of_free_ram():
    from transformers.integrations.accelerate import get_max_memory

    from warpload.loading.placement import machine_budgets

    ours, theirs = machine_budgets(), get_max_memory()
    assert set(ours) == set(theirs)
    assert abs(ours["cpu"] - theirs["cpu"]) < 0.05 * theirs["cpu"]  # free RAM moves between the two reads


def test_disk_layers_in_another_dtype_are_resaved_with_an_index(checkpoints, tmp_path):
    expected = outputs(AutoModelForCausalLM.from_pretrained(checkpoints["llama"], dtype=torch.bfloat16))
    model = AutoModelForCausalLM.from_pretrained(checkpoints["llama"], dtype=torch.bfloat16,
                                                 device_map=dict(MAPS["llama"]), offload_folder=str(tmp_path))
    logits, tokens = outputs(model)
    assert torch.equal(logits, expected[0]) and tokens == expected[1]
    index = json.loads((tmp_path / "index.json").read_text())
    assert "model.layers.0.mlp.down_proj.weight" in index and "model.layers.1.mlp.down_proj.weight" not in index
    assert index["lm_head.weight"]["dtype"] == "bfloat16"
    assert os.path.isfile(index["lm_head.weight"]["safetensors_file"])


def test_disk_without_offload_folder_when_resaving_is_refused(checkpoints):
    with pytest.raises(DeviceMapError, match="Please provide an `offload_folder`"):
        AutoModelForCausalLM.from_pretrained(checkpoints["gpt2"], dtype=torch.float16, device_map=dict(MAPS["gpt2"]))


@pytest.mark.parametrize("device_map, match", [
    ({"transformer": "gpu:0", "lm_head": "cpu"}, "device name"),
    ({"transformer": "xla", "lm_head": "cpu"}, "not on 'xla'"),
    ({"transformer": "cpu", "lm_head": "disk"}, None),  # valid: control for the others
    ({"transformer.h": "cpu", "lm_head": "disk"}, "does not give any device for the following parameters"),
    ({"transformer": 0, "lm_head": "cpu"}, "CUDA device"),
    ("auto", "Device cuda:0 is not recognized"),
])
def test_bad_maps_and_budgets_raise_before_loading(checkpoints, device_map, match, tmp_path):
    max_memory = {"cuda:0": "1GB", "cpu": "1GB"} if device_map == "auto" else None
    if match is None:
        AutoModelForCausalLM.from_pretrained(checkpoints["gpt2"], device_map=device_map, offload_folder=str(tmp_path))
        return
    with pytest.raises(DeviceMapError, match=match):
        AutoModelForCausalLM.from_pretrained(checkpoints["gpt2"], device_map=device_map, max_memory=max_memory,
                                             offload_folder=str(tmp_path))


def test_fake_gpu_budgets_on_a_cpu_machine_name_the_gpu(checkpoints):
    if torch.cuda.is_available():
        pytest.skip("a GPU is visible: GPU 0 exists")
    with pytest.raises(DeviceMapError, match="on GPU 0, but 0 CUDA device"):
        AutoModelForCausalLM.from_pretrained(checkpoints["gpt2"], device_map="auto", max_memory={0: "1GB", "cpu": 1})


@pytest.mark.parametrize("size", ["1.5", "lots"])
def test_bad_max_memory_sizes_are_refused(checkpoints, size):
    with pytest.raises(DeviceMapError, match="not in a valid format"):
        AutoModelForCausalLM.from_pretrained(checkpoints["gpt2"], device_map="auto", max_memory={"cpu": size})


def test_one_gpu_written_three_ways_is_one_device():
    assert map_device(0) == map_device("cuda:0") == map_device(torch.device("cuda", 0)) == 0
    spread = {"transformer": 0, "lm_head": "cuda:0", "transformer.wte": torch.device("cuda", 0)}
    assert parse_device_map(spread, None, None, False) == torch.device("cuda", 0)
    assert parse_device_map({"a": "cpu", "b": torch.device("cpu")}, None, None, False) == torch.device("cpu")


def test_device_map_none_follows_the_torch_device_context(checkpoints):
    with torch.device("cpu"):
        assert parse_device_map(None, None, None, False) == torch.device("cpu")
    with torch.device("meta"), pytest.raises(RuntimeError, match="anti-pattern"):
        AutoModelForCausalLM.from_pretrained(checkpoints["gpt2"])


def test_one_device_maps_set_no_hf_device_map(checkpoints):
    model = AutoModelForCausalLM.from_pretrained(checkpoints["gpt2"], device_map="auto")
    assert not hasattr(model, "hf_device_map") and parameter_devices(model) == {"cpu"}


def test_hooks_move_cpu_layers_to_the_compute_device_and_back():
    # "meta" stands in for a GPU: the hooks copy each CPU layer there for its forward, start the next layer's copy
    # while the current one computes, and give the CPU tensors back after.
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    hooks = attach_offload_hooks(model, [("0", ["0.weight", "0.bias"]), ("2", ["2.weight", "2.bias"])], "meta",
                                 DiskOffload(None), offload_cpu=True)
    assert {p.device.type for p in model.parameters()} == {"meta"}
    seen = []  # registered after the offload hooks: runs after layer 0's tensors were brought in
    model[0].register_forward_pre_hook(lambda module, args: seen.append(
        (module.weight.device.type, hooks[1].ready is not None)))
    output = model(torch.empty(3, 4, device="meta"))
    assert output.device.type == "meta" and output.shape == (3, 2)
    assert seen == [("meta", True)]  # layer 0 ran on the compute device with layer 2's copy already made
    assert {name: tensor.device.type for name, tensor in model.state_dict().items()} == dict.fromkeys(before, "meta")
    for hook in hooks:
        assert all(torch.equal(tensor, before[key]) for key, tensor in hook.host.items())


def test_outputs_and_inputs_move_with_their_containers_and_caches_stay():
    from warpload.loading.dispatch import move_tensors

    @dataclasses.dataclass
    class Output:
        logits: torch.Tensor
        past_key_values: object = None

    cache = object()
    moved = move_tensors((torch.ones(2), {"mask": torch.ones(1)}, Output(torch.ones(3), cache), cache),
                         torch.device("meta"))
    assert moved[0].is_meta and moved[1]["mask"].is_meta and moved[2].logits.is_meta
    assert moved[2].past_key_values is cache and moved[3] is cache


RSS_SCRIPT = textwrap.dedent("""
    import json, sys, torch, warpload
    from warpload import AutoModelForCausalLM
    def rss(field):
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) * 1024 for line in status if line.startswith(field))
    folder, budget, offload, warm_up = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    ids = torch.tensor([[1, 2, 3, 4]])
    options = dict(device_map="auto", max_memory={"cpu": budget}, offload_folder=offload) if budget else {}
    # A first load of a tiny checkpoint imports what loading imports: the peak below is the load's own.
    AutoModelForCausalLM.from_pretrained(warm_up, **options).generate(ids, max_new_tokens=1, pad_token_id=0)
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")  # resets the peak (VmHWM) to the current RSS
    base = rss("VmRSS:")
    model = AutoModelForCausalLM.from_pretrained(folder, **options)
    tokens = model.generate(ids, max_new_tokens=3, do_sample=False, pad_token_id=0)
    print(json.dumps({"peak": rss("VmHWM:") - base, "tokens": tokens.tolist(),
                      "map": getattr(model, "hf_device_map", None)}))
""")


@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="needs Linux /proc peak-RSS reset")
def test_peak_rss_stays_under_the_cpu_budget_plus_one_layer(tmp_path):
    model = tiny_transformers_model("gpt2", n_layer=6, n_embd=384, vocab_size=2048, n_positions=64)
    folder = save_checkpoint(model, tmp_path / "gpt2")
    warm_up = save_checkpoint(tiny_transformers_model("gpt2"), tmp_path / "tiny")
    total = sum(p.numel() * 4 for p in model.parameters())
    layer = sum(p.numel() * 4 for p in model.transformer.h[0].parameters())
    budget = total // 4

    done = subprocess.run([sys.executable, "-c", RSS_SCRIPT, str(folder), str(budget), str(tmp_path / "o"),
                           str(warm_up)], capture_output=True, text=True, check=True, timeout=300)
    offloaded = json.loads(done.stdout.strip().splitlines()[-1])
    expected = AutoModelForCausalLM.from_pretrained(folder).generate(torch.tensor([[1, 2, 3, 4]]), max_new_tokens=3,
                                                                      do_sample=False, pad_token_id=0)
    assert "disk" in offloaded["map"].values()
    assert offloaded["tokens"] == expected.tolist()
    # Activations, the KV cache and allocator slack of a 4-token prompt are well under 4 MiB.
    assert offloaded["peak"] < budget + layer + 4 * 2 ** 20, (offloaded["peak"], budget, layer)
