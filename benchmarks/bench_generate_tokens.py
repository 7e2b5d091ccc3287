"""Greedy-generate speed of the built-in GPT-2: tokens/s of warpload builds side by side, transformers as the peer.

Writes a small random GPT-2 checkpoint with transformers' save_pretrained (by default 4 layers, width
256, vocab 8192; a tinier one, where per-call Python overhead dominates, with --layers 2 --width 64),
then times `model.generate(prompt, max_new_tokens=N, do_sample=False)` in fresh processes, one case
per process, interleaved over `--repeat` rounds; prints medians of tokens per wall second and per CPU
second of the process (the steadier of the two when other work shares the cores). Each `--python` interpreter is
one warpload build (a virtual environment with warpload installed, e.g. main's and a branch's), so a
change to forward is measured against the code before it in one run:

    python benchmarks/bench_generate_tokens.py --python /work/main/.venv/bin/python .venv/bin/python
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

CASE = r"""
import json, sys, time, torch
torch.set_num_threads(1)
loader, folder, new_tokens = sys.argv[1], sys.argv[2], int(sys.argv[3])
if loader == "warpload":
    import warpload
    model = warpload.AutoModelForCausalLM.from_pretrained(folder)
else:
    import transformers
    model = transformers.AutoModelForCausalLM.from_pretrained(folder).eval()
prompt = torch.randint(3, 8000, (1, 16), generator=torch.Generator().manual_seed(0))
kwargs = dict(max_new_tokens=new_tokens, do_sample=False, pad_token_id=0, eos_token_id=None)
model.generate(prompt, **dict(kwargs, max_new_tokens=4))  # warm-up: first-call allocations
start, cpu_start = time.perf_counter(), time.process_time()
out = model.generate(prompt, **kwargs)
elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu_start
print(json.dumps({"tokens": out.shape[1] - prompt.shape[1], "seconds": elapsed, "cpu_seconds": cpu}))
"""


def write_checkpoint(folder: str, layers: int, width: int) -> None:
    import torch
    import transformers

    config = transformers.GPT2Config(n_layer=layers, n_embd=width, n_head=4, vocab_size=8192, n_positions=512,
                                     bos_token_id=1, eos_token_id=2)
    torch.manual_seed(0)
    transformers.GPT2LMHeadModel(config).save_pretrained(folder)


def run_case(python: str, loader: str, folder: str, new_tokens: int) -> tuple[float, float]:
    """(tokens per wall second, tokens per CPU second) of one fresh process."""
    result = subprocess.run([python, "-c", CASE, loader, folder, str(new_tokens)], check=True, capture_output=True,
                            text=True)
    record = json.loads(result.stdout.strip().splitlines()[-1])
    return record["tokens"] / record["seconds"], record["tokens"] / record["cpu_seconds"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--python", nargs="+", default=[sys.executable],
                        help="interpreters, each with one warpload build installed")
    parser.add_argument("--new-tokens", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--width", type=int, default=256)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        write_checkpoint(folder, args.layers, args.width)
        cases = [(python, "warpload") for python in args.python] + [(args.python[0], "transformers")]
        rates: dict[tuple[str, str], list[tuple[float, float]]] = {case: [] for case in cases}
        for _ in range(args.repeat):
            for python, loader in cases:
                rates[(python, loader)].append(run_case(python, loader, folder, args.new_tokens))
    print(f"greedy generate, GPT-2 {args.layers}x{args.width} (vocab 8192), prompt 16, {args.new_tokens} new "
          f"tokens, 1 torch thread, median of {args.repeat} fresh processes")
    print("| case | interpreter | tokens/s (median) | min | max | tokens per CPU s (median) | min | max |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for (python, loader), values in rates.items():
        cells = []
        for column in zip(*values):
            cells += [f"{statistics.median(column):.0f}", f"{min(column):.0f}", f"{max(column):.0f}"]
        print(f"| {loader} | `{os.path.relpath(python)}` | {' | '.join(cells)} |")


if __name__ == "__main__":
    main()
