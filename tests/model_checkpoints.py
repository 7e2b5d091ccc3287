"""Tiny random checkpoints written by transformers (safetensors or .bin, one file or shards) for the model tests."""
from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import torch
import transformers

# Two layers, hidden 64, with each family's distinguishing features switched on: GQA, the RoPE
# scaling variants, Mistral's sliding window (shorter than the test sequences), Qwen3's tied
# embeddings with dynamic RoPE (max_position_embeddings below the generated length).
_LLAMA_SHAPE = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                    num_key_value_heads=2, vocab_size=128, max_position_embeddings=64)
TINY_CONFIGS = {
    "gpt2": ("GPT2Config", dict(n_layer=2, n_embd=64, n_head=4, vocab_size=128, n_positions=64, bos_token_id=1,
                                eos_token_id=2)),
    "llama": ("LlamaConfig", dict(_LLAMA_SHAPE, rope_theta=500000.0, rope_scaling={
        "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
        "original_max_position_embeddings": 16})),
    "mistral": ("MistralConfig", dict(_LLAMA_SHAPE, sliding_window=8)),
    "qwen2": ("Qwen2Config", dict(_LLAMA_SHAPE, rope_scaling={
        "rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 16})),
    "qwen3": ("Qwen3Config", dict(_LLAMA_SHAPE, head_dim=16, tie_word_embeddings=True, max_position_embeddings=16,
                                  rope_scaling={"rope_type": "dynamic", "factor": 2.0})),
}
# rope_scaling of each variant transformers 5 implements for the Llama family (None: plain RoPE).
# transformers' configs write into the rope_scaling dict they get: pass copies.
ROPE_VARIANTS = {
    "default": None,
    "linear": {"rope_type": "linear", "factor": 2.0},
    "dynamic": {"rope_type": "dynamic", "factor": 2.0},
    "yarn": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 16, "beta_fast": 16},
    "llama3": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 16},
}
FORMATS = ("safetensors", "safetensors-sharded", "bin", "bin-sharded")


def tiny_transformers_model(arch: str, seed: int = 0, **overrides) -> "torch.nn.Module":
    """A randomly initialised transformers causal LM of the tiny `arch` config, in eval mode."""
    config_class, fields = TINY_CONFIGS[arch]
    config = getattr(transformers, config_class)(**copy.deepcopy({**fields, **overrides}))
    torch.manual_seed(seed)
    return transformers.AutoModelForCausalLM.from_config(config).eval()


def save_checkpoint(model: "torch.nn.Module", folder: Path, fmt: str = "safetensors",
                    dtype: torch.dtype = torch.float32) -> Path:
    """Writes model (cast to dtype) as transformers would, in one of FORMATS; returns the folder.

    transformers 5 writes only safetensors, so .bin checkpoints are torch.save'd state dicts as
    transformers 4 wrote them: tied weights included, sharing one storage.
    """
    model = model.to(dtype)
    model.config.dtype = dtype
    folder.mkdir(parents=True, exist_ok=True)
    if fmt == "safetensors":
        model.save_pretrained(folder)
    elif fmt == "safetensors-sharded":
        model.save_pretrained(folder, max_shard_size="40KB")
    else:
        model.config.save_pretrained(folder)
        state = model.state_dict()
        if fmt == "bin":
            torch.save(state, folder / "pytorch_model.bin")
        else:
            names = list(state)
            halves = [names[: len(names) // 2], names[len(names) // 2:]]
            weight_map = {}
            for index, part in enumerate(halves, start=1):
                shard = f"pytorch_model-{index:05d}-of-00002.bin"
                torch.save({name: state[name] for name in part}, folder / shard)
                weight_map.update({name: shard for name in part})
            index_json = {"metadata": {"total_size": sum(t.numel() * t.element_size() for t in state.values())},
                          "weight_map": weight_map}
            (folder / "pytorch_model.bin.index.json").write_text(json.dumps(index_json))
    return folder


def write_raw_checkpoint(folder: Path, config: "transformers.PretrainedConfig", tensors: dict) -> Path:
    """A config.json and a model.safetensors holding exactly `tensors` (for missing/extra/mis-shaped keys)."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    config.save_pretrained(folder)
    save_file({name: tensor.clone() for name, tensor in tensors.items()}, os.fspath(folder / "model.safetensors"),
              metadata={"format": "pt"})
    return folder


def left_padded_prompts(vocab_size: int = 128) -> tuple[torch.Tensor, torch.Tensor]:
    """Two prompts of 9 and 6 tokens, the shorter left-padded with token 0, and their attention mask."""
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(3, vocab_size, (2, 9), generator=generator)
    mask = torch.ones_like(ids)
    ids[1, :3] = 0
    mask[1, :3] = 0
    return ids, mask


def load_state(model: "torch.nn.Module", state: dict) -> "torch.nn.Module":
    """Copies `state` into the model's parameters (tied ones once)."""
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            tensor.copy_(state[name])
    return model


def generate_both(models: tuple, seed: int = 0, **options) -> tuple["torch.Tensor", "torch.Tensor"]:
    """warpload's and transformers' generate on left_padded_prompts() (pad 0), the same global seed before
    each; returns (ours, theirs) as generate returns them."""
    ours, theirs = models
    ids, mask = left_padded_prompts()
    options = {"attention_mask": mask, "pad_token_id": 0, **options}
    torch.manual_seed(seed)
    expected = theirs.generate(ids, **options)
    torch.manual_seed(seed)
    return ours.generate(ids, **options), expected
