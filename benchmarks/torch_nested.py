"""A nested training checkpoint (model + Adam state, ~1 GB): warpload.load_torch against torch.load(weights_only=True).

    python benchmarks/torch_nested.py                 # 5 rounds, warm and cold, zip format
    python benchmarks/torch_nested.py --rounds 3 --legacy

The checkpoint is written once under ~/.cache/warpload/torch-nested: {"model": a GPT-2-shaped fp32 state dict
(OrderedDict, 20 layers at n_embd 512, vocab 32000: 80 M parameters, lm_head tied to wte), "optimizer": Adam's
state_dict (exp_avg and exp_avg_sq per parameter, a step tensor each, param_groups), "epoch", "rng": a uint8
tensor}: 0.96 GB, 488 storages. Every load runs in a fresh process with torch and warpload imported before the
clock starts, cases interleaved round by round; "cold" evicts the file with posix_fadvise(DONTNEED) before the
process starts.
"limit" is a plain sequential read of the file into one buffer (readinto) in a fresh process: what the disk or
page cache delivers. Prints a Markdown table of medians with torch / warpload ratios.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections import OrderedDict
from pathlib import Path

CACHE_ROOT = Path.home() / ".cache" / "warpload" / "torch-nested"
CASES = ("warpload", "torch", "limit")
CACHE_STATES = ("warm", "cold")


def build_checkpoint(path: Path, legacy: bool) -> None:
    """Writes the training checkpoint (random weights) once."""
    import torch

    torch.manual_seed(0)
    embd, layers, vocab = 512, 20, 32000
    model = OrderedDict(wte=torch.randn(vocab, embd), wpe=torch.randn(1024, embd))
    for i in range(layers):
        for name, shape in (("ln_1.weight", (embd,)), ("attn.c_attn.weight", (embd, 3 * embd)),
                            ("attn.c_attn.bias", (3 * embd,)), ("attn.c_proj.weight", (embd, embd)),
                            ("ln_2.weight", (embd,)), ("mlp.c_fc.weight", (embd, 4 * embd)),
                            ("mlp.c_proj.weight", (4 * embd, embd))):
            model[f"h.{i}.{name}"] = torch.randn(shape)
    model["lm_head.weight"] = model["wte"]  # tied, one storage
    parameters = [name for name in model if name != "lm_head.weight"]
    state = {index: {"step": torch.tensor(100.0), "exp_avg": torch.randn_like(model[name]),
                     "exp_avg_sq": torch.rand_like(model[name])} for index, name in enumerate(parameters)}
    optimizer = {"state": state, "param_groups": [{"lr": 3e-4, "betas": (0.9, 0.999), "eps": 1e-8,
                                                   "weight_decay": 0.0, "amsgrad": False,
                                                   "params": list(range(len(parameters)))}]}
    checkpoint = {"model": model, "optimizer": optimizer, "epoch": 3, "rng": torch.randint(0, 255, (5056,),
                                                                                           dtype=torch.uint8)}
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    torch.save(checkpoint, partial, _use_new_zipfile_serialization=not legacy)
    os.replace(partial, path)


def evict(path: Path) -> None:
    from warpload.bench.harness import set_cache_state

    set_cache_state(str(path), "cold")


def warm(path: Path) -> None:
    from warpload.bench.harness import set_cache_state

    set_cache_state(str(path), "warm")


def worker(case: str, path: str) -> None:
    """One load in this (fresh) process; prints {"seconds": ...}."""
    import torch

    import warpload

    warpload.load_torch  # noqa: B018  (resolve the lazy name before the clock starts)
    start = time.perf_counter()
    if case == "warpload":
        loaded = warpload.load_torch(path)
    elif case == "torch":
        loaded = torch.load(path, weights_only=True)
    else:
        loaded = bytearray(os.path.getsize(path))
        with open(path, "rb", buffering=0) as handle:
            view = memoryview(loaded)
            while view:
                view = view[handle.readinto(view):]
    seconds = time.perf_counter() - start
    print(json.dumps({"seconds": seconds, "kind": type(loaded).__name__}))


def run_case(case: str, path: Path, cache: str) -> float:
    (evict if cache == "cold" else warm)(path)
    out = subprocess.run([sys.executable, __file__, "--worker", case, str(path)], check=True, capture_output=True,
                         text=True).stdout
    return json.loads(out.strip().splitlines()[-1])["seconds"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--legacy", action="store_true", help="the pre-1.6 format instead of the zip archive")
    parser.add_argument("--worker", nargs=2, metavar=("CASE", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(*args.worker)
    path = CACHE_ROOT / ("training-legacy.pt" if args.legacy else "training.pt")
    if not path.exists():
        build_checkpoint(path, args.legacy)
    times: dict[tuple[str, str], list[float]] = {(case, cache): [] for case in CASES for cache in CACHE_STATES}
    for _ in range(args.rounds):  # interleaved: every case once per round, in each cache state
        for cache in CACHE_STATES:
            for case in CASES:
                times[case, cache].append(run_case(case, path, cache))
    import torch

    size = path.stat().st_size
    print(f"{path.name}: {size / 1e9:.2f} GB, {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"torch {torch.__version__}, Python {platform.python_version()}, {args.rounds} rounds, "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}\n")
    print("| cache | warpload median s | torch.load median s | torch / warpload | limit (plain read) s | "
          "warpload GB/s |")
    print("|---|---:|---:|---:|---:|---:|")
    for cache in CACHE_STATES:
        ours, theirs, limit = (statistics.median(times[case, cache]) for case in CASES)
        print(f"| {cache} | {ours:.3f} | {theirs:.3f} | {theirs / ours:.2f}x | {limit:.3f} | {size / ours / 1e9:.2f} |")


if __name__ == "__main__":
    main()
