"""Synthetic GPT-2-shaped checkpoints (random weights, real names and shapes) for the demo and benchmarks."""
from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from .._fileio import write_atomically

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class GPT2Shape:
    n_layer: int = 12
    n_embd: int = 768
    n_positions: int = 1024
    vocab_size: int = 50257


# gpt2 (124M parameters: ~500 MB in float32) and gpt2-medium (355M: ~1.4 GB).
GPT2_SMALL = GPT2Shape()
GPT2_MEDIUM = GPT2Shape(n_layer=24, n_embd=1024)
# 6,004 small tensors in 0.11 GB: per-tensor costs (header parsing, unpickling) dominate, not bytes.
MANY_SMALL = GPT2Shape(n_layer=500, n_embd=64, n_positions=128, vocab_size=1000)
SHAPES = {"gpt2": GPT2_SMALL, "gpt2-medium": GPT2_MEDIUM, "many-small": MANY_SMALL}
SIZES = {"gpt2": "0.5 GB", "gpt2-medium": "1.4 GB", "many-small": "0.1 GB in 6,004 tensors"}


def gpt2_tensor_shapes(shape: GPT2Shape) -> dict[str, tuple[int, ...]]:
    """Parameter names and shapes of transformers' GPT2LMHeadModel as saved (lm_head tied, dropped)."""
    d = shape.n_embd
    shapes = {"transformer.wte.weight": (shape.vocab_size, d), "transformer.wpe.weight": (shape.n_positions, d)}
    for i in range(shape.n_layer):
        p = f"transformer.h.{i}."
        shapes.update({
            p + "ln_1.weight": (d,), p + "ln_1.bias": (d,),
            p + "attn.c_attn.weight": (d, 3 * d), p + "attn.c_attn.bias": (3 * d,),
            p + "attn.c_proj.weight": (d, d), p + "attn.c_proj.bias": (d,),
            p + "ln_2.weight": (d,), p + "ln_2.bias": (d,),
            p + "mlp.c_fc.weight": (d, 4 * d), p + "mlp.c_fc.bias": (4 * d,),
            p + "mlp.c_proj.weight": (4 * d, d), p + "mlp.c_proj.bias": (d,),
        })
    shapes.update({"transformer.ln_f.weight": (d,), "transformer.ln_f.bias": (d,)})
    return shapes


def gpt2_state_dict(shape: GPT2Shape = GPT2_SMALL, dtype: "torch.dtype | None" = None,
                    seed: int = 0) -> dict[str, "torch.Tensor"]:
    """Random weights (std 0.02, GPT-2's init scale) under GPT-2's names and shapes."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    return {
        name: (torch.randn(dims, generator=generator) * 0.02).to(dtype or torch.float32)
        for name, dims in gpt2_tensor_shapes(shape).items()
    }


def gpt2_config(shape: GPT2Shape) -> dict:
    return {
        "architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "n_ctx": shape.n_positions,
        "n_head": max(1, shape.n_embd // 64), "activation_function": "gelu_new", "layer_norm_epsilon": 1e-5,
        "bos_token_id": 50256, "eos_token_id": 50256, "torch_dtype": "float32", **asdict(shape),
    }


def write_gpt2_checkpoint(folder: str, shape: GPT2Shape = GPT2_SMALL, seed: int = 0) -> str:
    """Writes model.safetensors and config.json into folder atomically; returns the weights path."""
    from safetensors.torch import save_file

    os.makedirs(folder, exist_ok=True)
    weights = os.path.join(folder, "model.safetensors")
    write_atomically(weights, lambda tmp: save_file(gpt2_state_dict(shape, seed=seed), tmp, metadata={"format": "pt"}))
    config = json.dumps(gpt2_config(shape), indent=2)
    write_atomically(os.path.join(folder, "config.json"), lambda tmp: _write_text(tmp, config))
    return weights


def _write_text(path: str, text: str) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text)


def cache_dir() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "warpload")


def checkpoint_path(name: str) -> str:
    """Where the synthetic checkpoint `name` (gpt2 or gpt2-medium) is cached, written or not."""
    return os.path.join(cache_dir(), f"synthetic-{name}", "model.safetensors")


def default_checkpoint(name: str = "gpt2") -> str:
    """Path of the cached synthetic checkpoint `name` (gpt2 or gpt2-medium), written on first use."""
    weights = checkpoint_path(name)
    if not os.path.isfile(weights):
        write_gpt2_checkpoint(os.path.dirname(weights), SHAPES[name])
    return weights


def announced_checkpoint(name: str) -> str:
    """default_checkpoint(name), saying so on stderr when it must be generated first (the CLI's demo models)."""
    if not os.path.isfile(checkpoint_path(name)):
        print(f"generating the synthetic {name} checkpoint ({SIZES[name]}, random weights) under {cache_dir()}; "
              "this happens once", file=sys.stderr)
    return default_checkpoint(name)
