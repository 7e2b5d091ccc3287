"""Disk offload: a checkpoint larger than the CPU budget, loaded with device_map="auto" and run for 8 tokens,
warpload against transformers + accelerate, each run in a fresh process, interleaved, cold cache, medians.

    python benchmarks/offload.py                       # GPT-2-small-shaped fp32 (500 MB), budget a quarter of it
    python benchmarks/offload.py --rounds 5 --budget-fraction 0.5

The checkpoint (random weights, real shapes) is written once under ~/.cache/warpload/offload. Before every run
each weight file is evicted from the page cache (posix_fadvise(POSIX_FADV_DONTNEED)) and the offload folder is
emptied. A run imports the library, loads with max_memory={"cpu": budget} and offload_folder, then times the
prefill (the first token: load + prefill is the time to first token) and a greedy 8-token generate, and reports
its peak RSS (VmHWM, from process start: imports included, as a user's process sees it).
"""
from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

CACHE_ROOT = Path.home() / ".cache" / "warpload" / "offload"
LIBRARIES = ("warpload", "transformers")
NEW_TOKENS = 8

RUN = """
import json, sys, time
started = time.perf_counter()
library, folder, budget, offload = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
import torch
if library == "warpload":
    from warpload import AutoModelForCausalLM
else:
    from transformers import AutoModelForCausalLM
imported = time.perf_counter()
model = AutoModelForCausalLM.from_pretrained(folder, device_map="auto", max_memory={"cpu": budget},
                                             offload_folder=offload)
loaded = time.perf_counter()
ids = torch.tensor([[464, 2068, 7586, 21831, 18045, 625, 262]])
with torch.no_grad():
    first = int(model(ids).logits[0, -1].argmax())
prefilled = time.perf_counter()
tokens = model.generate(ids, max_new_tokens=%d, do_sample=False, pad_token_id=0)
generated = time.perf_counter()
with open("/proc/self/status") as status:
    peak = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmHWM:"))
print(json.dumps({"import_s": imported - started, "load_s": loaded - imported, "first_token_s": prefilled - started,
                  "generate_s": generated - prefilled, "peak_rss": peak, "first": first,
                  "tokens": tokens[0, ids.shape[1]:].tolist(),
                  "disk": sum(1 for v in model.hf_device_map.values() if v == "disk")}))
""" % NEW_TOKENS


def checkpoint(layers: int, width: int) -> Path:
    """A GPT-2-shaped fp32 safetensors checkpoint, written once."""
    folder = CACHE_ROOT / f"gpt2-{layers}x{width}"
    if not (folder / "model.safetensors").exists():
        import torch
        import transformers

        config = transformers.GPT2Config(n_layer=layers, n_embd=width, n_head=width // 64)
        with torch.device("meta"):
            model = transformers.GPT2LMHeadModel(config)
        model = model.to_empty(device="cpu")
        torch.manual_seed(0)
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.normal_(0, 0.02)
        model.save_pretrained(folder)
    return folder


def evict(folder: Path) -> None:
    from warpload.bench.harness import set_cache_state

    for path in folder.glob("*.safetensors"):
        set_cache_state(str(path), "cold")


def run(library: str, folder: Path, budget: int, offload: Path) -> dict:
    shutil.rmtree(offload, ignore_errors=True)
    evict(folder)
    done = subprocess.run([sys.executable, "-c", RUN, library, str(folder), str(budget), str(offload)],
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--width", type=int, default=768)
    parser.add_argument("--budget-fraction", type=float, default=0.25)
    args = parser.parse_args()
    folder = checkpoint(args.layers, args.width)
    size = (folder / "model.safetensors").stat().st_size
    budget = int(size * args.budget_fraction)
    offload = CACHE_ROOT / "offload-folder"
    results: dict[str, list[dict]] = {library: [] for library in LIBRARIES}
    for _ in range(args.rounds):
        for library in LIBRARIES:  # interleaved: both see the same machine load
            results[library].append(run(library, folder, budget, offload))
    import torch
    import transformers

    import warpload

    print(f"checkpoint {folder.name}: {size / 1e6:.0f} MB fp32 safetensors, max_memory cpu {budget / 1e6:.0f} MB, "
          f"{args.rounds} rounds, cold cache, {platform.machine()}, python {platform.python_version()}, "
          f"torch {torch.__version__}, transformers {transformers.__version__}, warpload {warpload.__version__}")
    print("\n| library | disk entries | import s | load s | time to first token s | 8 tokens s | peak RSS MB | "
          "same tokens |")
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    reference = results["transformers"][0]["tokens"]
    for library, rows in results.items():
        def median(field: str, rows: list = rows) -> float:
            return statistics.median(row[field] for row in rows)
        same = all(row["tokens"] == reference for row in rows)
        print(f"| {library} | {rows[0]['disk']} | {median('import_s'):.2f} | {median('load_s'):.2f} | "
              f"{median('first_token_s'):.2f} | "
              f"{median('generate_s'):.2f} | {median('peak_rss') / 1e6:.0f} | {same} |")
    def ratio(field: str) -> float:
        return (statistics.median(row[field] for row in results["transformers"])
                / statistics.median(row[field] for row in results["warpload"]))

    print(f"\ntime to first token: transformers / warpload = {ratio('first_token_s'):.2f}x; "
          f"load: {ratio('load_s'):.2f}x; peak RSS warpload / transformers = {1 / ratio('peak_rss'):.2f}")


if __name__ == "__main__":
    main()
