"""FP8 checkpoint to bf16 parameters: warpload (engine dequantization) vs transformers (FineGrainedFP8, which
dequantizes on a CPU), each load in a fresh process, page cache warm and cold, interleaved; medians.

    .venv/bin/python benchmarks/bench_fp8.py [--rounds 5] [--folder /tmp/warpload-bench-fp8]

The checkpoint is TinyLlama-1.1B-shaped (22 layers, hidden 2048): every projection float8_e4m3fn with
128 x 128 weight_scale_inv blocks (as DeepSeek-V3 and Qwen3-FP8 ship them), embeddings and norms in bf16,
about 1.2 GB; random values, written once.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

LAYERS, HIDDEN, INTERMEDIATE, HEADS, KV_HEADS, VOCAB, BLOCK = 22, 2048, 5632, 32, 4, 32000, 128

LOAD = """
import json, sys, time
start = time.perf_counter()
import torch
if sys.argv[2] == "warpload":
    import warpload as library
else:
    import transformers as library
imported = time.perf_counter()
model = library.AutoModelForCausalLM.from_pretrained(sys.argv[1])
loaded = time.perf_counter()
assert model.dtype == torch.bfloat16
print(json.dumps({"import": imported - start, "load": loaded - imported}))
"""


def write_checkpoint(folder: Path) -> Path:
    import torch
    from safetensors.torch import save_file

    if (folder / "model.safetensors").is_file():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(0)
    head_dim = HIDDEN // HEADS
    shapes = {"q_proj": (HIDDEN, HIDDEN), "k_proj": (KV_HEADS * head_dim, HIDDEN),
              "v_proj": (KV_HEADS * head_dim, HIDDEN), "o_proj": (HIDDEN, HIDDEN)}
    mlp = {"gate_proj": (INTERMEDIATE, HIDDEN), "up_proj": (INTERMEDIATE, HIDDEN), "down_proj": (HIDDEN, INTERMEDIATE)}
    tensors = {"model.embed_tokens.weight": torch.randn(VOCAB, HIDDEN, generator=generator).to(torch.bfloat16),
               "lm_head.weight": torch.randn(VOCAB, HIDDEN, generator=generator).to(torch.bfloat16),
               "model.norm.weight": torch.ones(HIDDEN, dtype=torch.bfloat16)}
    for layer in range(LAYERS):
        prefix = f"model.layers.{layer}"
        projections = [*((f"self_attn.{k}", v) for k, v in shapes.items()), *((f"mlp.{k}", v) for k, v in mlp.items())]
        for name, shape in projections:
            # Finite float8 values only (0x7F / 0xFF are NaN in e4m3fn).
            raw = torch.randint(0, 0x7F, shape, dtype=torch.uint8, generator=generator)
            tensors[f"{prefix}.{name}.weight"] = raw.view(torch.float8_e4m3fn)
            grid = (-(-shape[0] // BLOCK), -(-shape[1] // BLOCK))
            tensors[f"{prefix}.{name}.weight_scale_inv"] = torch.rand(grid, generator=generator) * 1e-3
        for norm in ("input_layernorm", "post_attention_layernorm"):
            tensors[f"{prefix}.{norm}.weight"] = torch.ones(HIDDEN, dtype=torch.bfloat16)
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    config = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": HIDDEN,
              "intermediate_size": INTERMEDIATE, "num_hidden_layers": LAYERS, "num_attention_heads": HEADS,
              "num_key_value_heads": KV_HEADS, "vocab_size": VOCAB, "max_position_embeddings": 2048,
              "rms_norm_eps": 1e-5, "tie_word_embeddings": False, "dtype": "bfloat16",
              "quantization_config": {"quant_method": "fp8", "activation_scheme": "dynamic",
                                      "weight_block_size": [BLOCK, BLOCK]}}
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def fresh_load(folder: Path, library: str, cache: str) -> dict:
    # The package's one way to make a file warm or cold (what `warpload bench` uses).
    from warpload.bench.harness import set_cache_state

    set_cache_state(str(folder / "model.safetensors"), cache)
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", LOAD, str(folder), library], capture_output=True, text=True,
                            env={**os.environ, "TRANSFORMERS_VERBOSITY": "error"})
    if result.returncode != 0:
        raise RuntimeError(f"{library} failed:\n{result.stderr[-3000:]}")
    return {**json.loads(result.stdout.strip().splitlines()[-1]), "process": time.perf_counter() - start}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--folder", type=Path, default=Path("/tmp/warpload-bench-fp8"))
    args = parser.parse_args()
    folder = write_checkpoint(args.folder)
    size = (folder / "model.safetensors").stat().st_size
    runs: dict[tuple[str, str], list[dict]] = {}
    for round_index in range(args.rounds):
        for cache in ("warm", "cold"):
            libraries = ("warpload", "transformers") if round_index % 2 == 0 else ("transformers", "warpload")
            for library in libraries:
                runs.setdefault((cache, library), []).append(fresh_load(folder, library, cache))
        print(f"round {round_index + 1}/{args.rounds}", file=sys.stderr, flush=True)
    print(f"FP8 checkpoint {size / 1e9:.2f} GB -> bf16, fresh processes, median of {args.rounds} "
          f"(from_pretrained seconds; whole process in brackets)\n")
    print("| cache | warpload | transformers | ratio |\n|---|---|---|---|")
    for cache in ("warm", "cold"):
        ours = statistics.median(r["load"] for r in runs[(cache, "warpload")])
        theirs = statistics.median(r["load"] for r in runs[(cache, "transformers")])
        ours_process = statistics.median(r["process"] for r in runs[(cache, "warpload")])
        theirs_process = statistics.median(r["process"] for r in runs[(cache, "transformers")])
        print(f"| {cache} | {ours:.2f} s ({ours_process:.2f}) | {theirs:.2f} s ({theirs_process:.2f}) | "
              f"{theirs / ours:.2f}x |")


if __name__ == "__main__":
    main()
