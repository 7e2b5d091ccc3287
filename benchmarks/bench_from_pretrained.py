"""from_pretrained and the fresh-process cold start: warpload against transformers, interleaved in one run.

    python benchmarks/bench_from_pretrained.py                  # every checkpoint, warm and cold
    python benchmarks/bench_from_pretrained.py --rounds 3 --checkpoints tinyllama-bf16-3shards

The checkpoints are written once (random weights, real shapes) under ~/.cache/warpload/from-pretrained:
GPT-2-medium-shaped fp32 as safetensors and as .bin, and a TinyLlama-1.1B-shaped bf16 checkpoint in
three safetensors shards. "cold" evicts every file of the checkpoint from the page cache with
posix_fadvise(DONTNEED) before each load (the machine's other caches stay). The fresh-process rows
time a new interpreter that imports, loads and generates one greedy token, and report its peak RSS
(VmHWM). Prints a Markdown table of medians with transformers / warpload ratios.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import transformers

import warpload

CACHE_ROOT = Path.home() / ".cache" / "warpload" / "from-pretrained"
LIBRARIES = ("warpload", "transformers")
CACHE_STATES = ("warm", "cold")
# Goals from issue 6: transformers' time / warpload's time, and warpload's peak RSS / transformers'.
LOAD_SPEEDUP_GOAL = 3.0
COLD_START_SPEEDUP_GOAL = 2.0
RSS_FRACTION_GOAL = 0.60
FILL_BLOCK = 1 << 22


@dataclass(frozen=True)
class Checkpoint:
    name: str
    build: Callable[[], torch.nn.Module]
    dtype: torch.dtype
    fmt: str  # "safetensors", "bin" or "safetensors-3-shards"


def gpt2_medium() -> torch.nn.Module:
    return _random_model(transformers.GPT2LMHeadModel, transformers.GPT2Config(n_layer=24, n_embd=1024, n_head=16))


def tinyllama() -> torch.nn.Module:
    config = transformers.LlamaConfig(hidden_size=2048, intermediate_size=5632, num_hidden_layers=22,
                                      num_attention_heads=32, num_key_value_heads=4, vocab_size=32000)
    return _random_model(transformers.LlamaForCausalLM, config)


CHECKPOINTS = {
    "gpt2-medium-fp32-safetensors": Checkpoint("gpt2-medium-fp32-safetensors", gpt2_medium, torch.float32,
                                               "safetensors"),
    "gpt2-medium-fp32-bin": Checkpoint("gpt2-medium-fp32-bin", gpt2_medium, torch.float32, "bin"),
    "tinyllama-bf16-3shards": Checkpoint("tinyllama-bf16-3shards", tinyllama, torch.bfloat16,
                                         "safetensors-3-shards"),
}


def _random_model(model_class: type, config: transformers.PretrainedConfig) -> torch.nn.Module:
    """The model built on meta, then given memory filled from one random block (seconds, not minutes of init)."""
    with torch.device("meta"):
        model = model_class(config)
    model.to_empty(device="cpu")
    block = torch.randn(FILL_BLOCK, generator=torch.Generator().manual_seed(0)) * 0.02
    with torch.no_grad():
        for index, tensor in enumerate(model.state_dict().values()):
            flat = tensor.view(-1)
            start = (index * 7919) % FILL_BLOCK  # a different stretch of the block for each tensor
            for offset in range(0, flat.numel(), FILL_BLOCK):
                count = min(FILL_BLOCK, flat.numel() - offset)
                flat[offset:offset + count].copy_(block.roll(-start)[:count])
    model.tie_weights()
    return model.eval()


def ensure_checkpoint(checkpoint: Checkpoint) -> Path:
    """The checkpoint's folder, written on first use (to a temporary name, then renamed)."""
    folder = CACHE_ROOT / checkpoint.name
    if (folder / "config.json").exists():
        return folder
    partial = folder.with_name(folder.name + f".partial-{os.getpid()}")
    print(f"writing {folder} ...", file=sys.stderr, flush=True)
    model = checkpoint.build().to(checkpoint.dtype)
    model.config.dtype = checkpoint.dtype
    if checkpoint.fmt == "safetensors":
        model.save_pretrained(partial)
    elif checkpoint.fmt == "safetensors-3-shards":
        total = sum(t.numel() * t.element_size() for t in model.state_dict().values())
        model.save_pretrained(partial, max_shard_size=total // 3 + (64 << 20))
        shards = sorted(partial.glob("model-*.safetensors"))
        if len(shards) != 3:
            raise RuntimeError(f"{partial}: expected 3 shards, save_pretrained wrote {len(shards)}")
    else:
        # transformers 5 writes only safetensors; a .bin is what transformers 4's save_pretrained wrote.
        model.config.save_pretrained(partial)
        torch.save(model.state_dict(), partial / "pytorch_model.bin")
    partial.rename(folder)
    return folder


def weight_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix in (".safetensors", ".bin"))


def set_cache_state(folder: Path, cache: str) -> None:
    """warm: every weight file read once; cold: every weight file evicted (POSIX_FADV_DONTNEED)."""
    for path in weight_files(folder):
        fd = os.open(path, os.O_RDONLY)
        try:
            if cache == "cold":
                os.fsync(fd)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            else:
                while os.read(fd, 16 << 20):
                    pass
        finally:
            os.close(fd)


def load_function(library: str) -> Callable[[Path], torch.nn.Module]:
    if library == "warpload":
        return warpload.AutoModelForCausalLM.from_pretrained
    return transformers.AutoModelForCausalLM.from_pretrained


def first_token(model: torch.nn.Module) -> int:
    """One greedy token after an 8-token prompt (the first use of every weight)."""
    ids = torch.tensor([[1, 2, 3, 4, 5, 6, 7, 8]])
    return int(model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=1, do_sample=False,
                              pad_token_id=0)[0, -1])


def time_in_process(folder: Path, library: str, cache: str) -> tuple[float, float]:
    """Seconds for from_pretrained, and for from_pretrained plus the first token.

    transformers 5 leaves CPU parameters as views of the mapped safetensors files, so its
    from_pretrained reads little and the first forward pays the page faults; the second figure
    compares what a user waits for before output.
    """
    gc.collect()
    set_cache_state(folder, cache)
    load = load_function(library)
    start = time.perf_counter()
    model = load(folder)
    loaded = time.perf_counter()
    first_token(model)
    elapsed = time.perf_counter() - start
    del model
    gc.collect()
    return loaded - start, elapsed


# The fresh process: every import it needs, the load, one greedy token. Prints its own phases and peak RSS.
FRESH_PROCESS = """
import json, sys, time
start = time.perf_counter()

def peak_rss():
    # VmHWM, not ru_maxrss: Linux folds the forking parent's peak into the child's ru_maxrss at exec,
    # so a child of this (multi-GB) benchmark would report the parent's peak.
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmHWM:"))

import torch
if sys.argv[2] == "warpload":
    import warpload
    load = warpload.AutoModelForCausalLM.from_pretrained
else:
    import transformers
    load = transformers.AutoModelForCausalLM.from_pretrained
imported = time.perf_counter()
model = load(sys.argv[1])
loaded = time.perf_counter()
ids = torch.tensor([[1, 2, 3, 4, 5, 6, 7, 8]])
tokens = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=1, do_sample=False, pad_token_id=0)
done = time.perf_counter()
print(json.dumps({"import": imported - start, "load": loaded - imported, "first_token": done - loaded,
                  "token_at": time.time(),
                  "token": int(tokens[0, -1]), "maxrss": peak_rss()}))
"""


def fresh_process(folder: Path, library: str) -> dict:
    set_cache_state(folder, "cold")
    spawned = time.time()
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", FRESH_PROCESS, str(folder), library], capture_output=True,
                            text=True, env={**os.environ, "TRANSFORMERS_VERBOSITY": "error"})
    wall = time.perf_counter() - start
    if result.returncode != 0:
        raise RuntimeError(f"{library} fresh process on {folder} failed:\n{result.stderr[-3000:]}")
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    # to_token: what the user waits for (spawn to the first token); wall adds the interpreter's exit.
    return {**measured, "to_token": measured["token_at"] - spawned, "wall": wall}


def warm_up_imports(folder: Path) -> None:
    """One untimed load per library, so lazy imports inside from_pretrained are not charged to round 1."""
    for library in LIBRARIES:
        time_in_process(folder, library, "warm")


def run(names: list[str], rounds: int, fresh_rounds: int) -> dict:
    folders = {name: ensure_checkpoint(CHECKPOINTS[name]) for name in names}
    if rounds:
        warm_up_imports(folders[names[0]])
    loads: dict[tuple[str, str, str], list[tuple[float, float]]] = {}
    for round_index in range(rounds):
        for name in names:
            for cache in CACHE_STATES:
                # Alternate who goes first, so neither always follows the other's freed memory.
                order = LIBRARIES if round_index % 2 == 0 else LIBRARIES[::-1]
                for library in order:
                    loads.setdefault((name, cache, library), []).append(time_in_process(folders[name], library,
                                                                                        cache))
        print(f"round {round_index + 1}/{rounds} done", file=sys.stderr, flush=True)
    fresh: dict[tuple[str, str], list[dict]] = {}
    for round_index in range(fresh_rounds):
        for name in names:
            order = LIBRARIES if round_index % 2 == 0 else LIBRARIES[::-1]
            for library in order:
                fresh.setdefault((name, library), []).append(fresh_process(folders[name], library))
        print(f"fresh-process round {round_index + 1}/{fresh_rounds} done", file=sys.stderr, flush=True)
    sizes = {name: sum(p.stat().st_size for p in weight_files(folder)) for name, folder in folders.items()}
    return {"loads": loads, "fresh": fresh, "sizes": sizes}


def median_of(runs: list[dict], key: str) -> float:
    return statistics.median(run[key] for run in runs)


def markdown(results: dict, rounds: int, fresh_rounds: int) -> str:
    loads, fresh, sizes = results["loads"], results["fresh"], results["sizes"]
    names = list(sizes)
    lines = []
    if rounds:
        lines += in_process_table(loads, sizes, rounds) + [""]
    lines += fresh_process_table(fresh, names, fresh_rounds)
    return "\n".join(lines)


def in_process_table(loads: dict, sizes: dict[str, int], rounds: int) -> list[str]:
    lines = [f"In one process (median of {rounds}, s; ratio = transformers / warpload, goal ≥ "
             f"{LOAD_SPEEDUP_GOAL:g}x): `from_pretrained`, and `from_pretrained` + 1 greedy token:", "",
             "| checkpoint | GB | cache | warpload load | transformers load | ratio | warpload load+token | "
             "transformers load+token | ratio |", "|---|---|---|---|---|---|---|---|---|"]
    for name in sizes:
        for cache in CACHE_STATES:
            cells = []
            for column in (0, 1):
                ours = statistics.median(t[column] for t in loads[(name, cache, "warpload")])
                theirs = statistics.median(t[column] for t in loads[(name, cache, "transformers")])
                cells.append(f"{ours:.3f} | {theirs:.3f} | {theirs / ours:.2f}x")
            lines.append(f"| {name} | {sizes[name] / 1e9:.2f} | {cache} | {' | '.join(cells)} |")
    return lines


def fresh_process_table(fresh: dict, names: list[str], fresh_rounds: int) -> list[str]:
    lines = [f"Fresh process, cold page cache: spawn to first greedy token (median and min of {fresh_rounds}, "
             f"s; goal ≥ {COLD_START_SPEEDUP_GOAL:g}x), its phases, and peak RSS (MiB; goal ≤ "
             f"{RSS_FRACTION_GOAL:.0%} of transformers'):", "",
             "| checkpoint | library | spawn to token | (min) | import | load | first token | wall with exit | "
             "peak RSS | time ratio (of mins) | RSS ratio |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name in names:
        ours, theirs = fresh[(name, "warpload")], fresh[(name, "transformers")]
        same_token = {run["token"] for run in ours} == {run["token"] for run in theirs}
        for library, runs in (("warpload", ours), ("transformers", theirs)):
            time_ratio = rss_ratio = ""
            if library == "warpload":
                fastest = min(run["to_token"] for run in theirs) / min(run["to_token"] for run in ours)
                time_ratio = f"{median_of(theirs, 'to_token') / median_of(ours, 'to_token'):.2f}x ({fastest:.2f}x)"
                rss_ratio = f"{median_of(ours, 'maxrss') / median_of(theirs, 'maxrss'):.0%}"
                if not same_token:
                    rss_ratio += " (tokens differ!)"
            seconds = " | ".join([f"{median_of(runs, 'to_token'):.2f}", f"{min(run['to_token'] for run in runs):.2f}"]
                                 + [f"{median_of(runs, key):.2f}" for key in ("import", "load", "first_token", "wall")])
            lines.append(f"| {name} | {library} | {seconds} | {median_of(runs, 'maxrss') / 2**20:.0f} | {time_ratio} | "
                         f"{rss_ratio} |")
    return lines


def versions() -> str:
    return (f"python {platform.python_version()}, torch {torch.__version__}, transformers {transformers.__version__}, "
            f"warpload {getattr(warpload, '__version__', '?')}, {os.cpu_count()} CPUs, {platform.machine()}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoints", nargs="+", choices=sorted(CHECKPOINTS), default=list(CHECKPOINTS))
    parser.add_argument("--rounds", type=int, default=5, help="in-process loads per case (default 5)")
    parser.add_argument("--fresh-rounds", type=int, default=3, help="fresh processes per case (default 3)")
    parser.add_argument("--json", type=Path, help="also write the raw timings here")
    args = parser.parse_args(argv)
    results = run(args.checkpoints, args.rounds, args.fresh_rounds)
    if args.json:
        raw = {"loads": {"/".join(key): value for key, value in results["loads"].items()},
               "fresh": {"/".join(key): value for key, value in results["fresh"].items()},
               "sizes": results["sizes"], "versions": versions()}
        args.json.write_text(json.dumps(raw, indent=1))
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {versions()}\n")
    print(markdown(results, args.rounds, args.fresh_rounds))


if __name__ == "__main__":
    main()
