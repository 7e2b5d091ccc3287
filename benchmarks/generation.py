"""Generation speed: warpload's built-in generate against transformers' on the same weights, CPU, interleaved.

    python benchmarks/generation.py                        # gpt2- and llama-shaped, greedy and beam 4, batch 1 and 8
    python benchmarks/generation.py --rounds 5 --new-tokens 64

A small random checkpoint of each architecture is written once (by transformers) under
~/.cache/warpload/generation and loaded by both libraries. Every (library, model, mode, batch)
case runs in a fresh process: load, one short warm-up generate, then one timed generate of
--new-tokens tokens per row (eos disabled, so every case makes the same number of tokens). Cases are
interleaved round by round; the table shows median tokens/s (batch * new tokens / seconds) and
warpload / transformers. The issue's goal is >= 1.2x.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
from pathlib import Path

CACHE_ROOT = Path.home() / ".cache" / "warpload" / "generation"
GOAL = 1.2
MODELS = {
    "gpt2": ("GPT2Config", dict(n_layer=6, n_embd=512, n_head=8, vocab_size=16384, n_positions=512)),
    "llama": ("LlamaConfig", dict(hidden_size=512, intermediate_size=1408, num_hidden_layers=6, num_attention_heads=8,
                                  num_key_value_heads=4, vocab_size=16384, max_position_embeddings=512)),
}
MODES = {"greedy": {"num_beams": 1}, "beam4": {"num_beams": 4}}
BATCHES = (1, 8)
PROMPT_LENGTH = 16

CHILD = r"""
import json, sys, time, torch
library, folder, mode, batch, new_tokens, prompt_length = sys.argv[1:7]
batch, new_tokens, prompt_length = int(batch), int(new_tokens), int(prompt_length)
if library == "warpload":
    import warpload as lib
else:
    import transformers as lib
model = lib.AutoModelForCausalLM.from_pretrained(folder)
ids = torch.randint(3, 1000, (batch, prompt_length), generator=torch.Generator().manual_seed(0))
options = dict(attention_mask=torch.ones_like(ids), pad_token_id=0, eos_token_id=None, do_sample=False,
               num_beams=json.loads(sys.argv[7])["num_beams"])
model.generate(ids, max_new_tokens=2, **options)
start = time.perf_counter()
out = model.generate(ids, max_new_tokens=new_tokens, min_new_tokens=new_tokens, **options)
elapsed = time.perf_counter() - start
assert out.shape[1] == prompt_length + new_tokens, out.shape
print(json.dumps({"tokens_per_s": batch * new_tokens / elapsed}))
"""


def checkpoint(name: str) -> Path:
    """The random checkpoint of `name`, written by transformers once."""
    import torch
    import transformers

    folder = CACHE_ROOT / name
    if not (folder / "config.json").exists():
        config_class, fields = MODELS[name]
        torch.manual_seed(0)
        model = transformers.AutoModelForCausalLM.from_config(getattr(transformers, config_class)(**fields))
        model.save_pretrained(folder)
    return folder


def run_case(library: str, folder: Path, mode: str, batch: int, new_tokens: int) -> float:
    result = subprocess.run([sys.executable, "-c", CHILD, library, str(folder), mode, str(batch), str(new_tokens),
                             str(PROMPT_LENGTH), json.dumps(MODES[mode])],
                            check=True, capture_output=True, text=True)
    return json.loads(result.stdout.strip().splitlines()[-1])["tokens_per_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    args = parser.parse_args()
    import torch
    import transformers

    folders = {name: checkpoint(name) for name in args.models}
    cases = [(model, mode, batch) for model in args.models for mode in MODES for batch in BATCHES]
    speeds: dict[tuple, list[float]] = {}
    for round_index in range(args.rounds):
        for case in cases:
            for library in ("warpload", "transformers"):
                speed = run_case(library, folders[case[0]], case[1], case[2], args.new_tokens)
                speeds.setdefault((library, *case), []).append(speed)
        print(f"round {round_index + 1}/{args.rounds} done", file=sys.stderr)
    print(f"- machine: {platform.machine()}, {torch.get_num_threads()} torch threads; python "
          f"{platform.python_version()}, torch {torch.__version__}, transformers {transformers.__version__}")
    print(f"- prompt {PROMPT_LENGTH} tokens, {args.new_tokens} new tokens per row, fp32, KV cache, median of "
          f"{args.rounds} fresh processes per case, interleaved\n")
    print("| model | mode | batch | warpload tok/s | transformers tok/s | warpload / transformers |")
    print("|---|---|---:|---:|---:|---:|")
    for model, mode, batch in cases:
        ours = statistics.median(speeds[("warpload", model, mode, batch)])
        theirs = statistics.median(speeds[("transformers", model, mode, batch)])
        print(f"| {model} | {mode} | {batch} | {ours:.1f} | {theirs:.1f} | {ours / theirs:.2f}x |")
    print(f"\n- goal: >= {GOAL}x")


if __name__ == "__main__":
    main()
