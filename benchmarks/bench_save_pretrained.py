"""How long model.save_pretrained takes in warpload and in transformers for the same GPT-2-shaped model.

Each case runs in a fresh process (the model is loaded first, outside the timing), cases interleaved, medians
over the repetitions. The floor is safetensors.torch.save_file of the same state dict (warpload-loaded, mapped)
into one file. Every case writes into a fresh folder on the same file system after an os.sync() (so an earlier
case's dirty pages do not throttle it); the page cache absorbs the writes (no fsync in the timing), as for users.

    .venv/bin/python benchmarks/bench_save_pretrained.py --reps 5
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

CHILD = r"""
import sys, time, torch
case, source, out = sys.argv[1:4]
if case == "transformers":
    import transformers
    model = transformers.AutoModelForCausalLM.from_pretrained(source)
else:
    import warpload
    model = warpload.AutoModelForCausalLM.from_pretrained(source, zero_copy=False if "owned" in case else None)
state = {k: v for k, v in model.state_dict().items() if k != "lm_head.weight"}
import os
os.sync()  # no dirty pages of an earlier case: each write starts below the kernel's writeback throttle
started = time.perf_counter()
if case == "limit: safetensors save_file, one file":
    from safetensors.torch import save_file
    os.makedirs(out)
    save_file(state, out + "/model.safetensors", metadata={"format": "pt"})
else:
    model.save_pretrained(out, max_shard_size="200MB")
print(time.perf_counter() - started)
"""
CASES = ("warpload", "warpload, owned parameters (zero_copy=False)", "transformers",
         "limit: safetensors save_file, one file")


def make_checkpoint(folder: str, layers: int) -> int:
    """A random GPT-2-shaped checkpoint (768 wide, 50257 tokens) written by transformers; its bytes."""
    import torch
    import transformers

    if not os.path.exists(os.path.join(folder, "config.json")):
        torch.manual_seed(0)
        config = transformers.GPT2Config(n_layer=layers)
        transformers.AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    return os.path.getsize(os.path.join(folder, "model.safetensors"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--layers", type=int, default=12)
    args = parser.parse_args()
    source = os.path.join(tempfile.gettempdir(), f"warpload-bench-save-gpt2-{args.layers}")
    size = make_checkpoint(source, args.layers)
    times: dict[str, list[float]] = {case: [] for case in CASES}
    with tempfile.TemporaryDirectory(dir=os.path.dirname(source)) as scratch:
        for rep in range(args.reps):
            for case in CASES:
                out = os.path.join(scratch, f"out-{rep}")
                result = subprocess.run([sys.executable, "-c", CHILD, case, source, out], check=True,
                                        capture_output=True, text=True)
                times[case].append(float(result.stdout.strip().splitlines()[-1]))
                shutil.rmtree(out)
    floor = statistics.median(times[CASES[-1]])
    print(f"GPT-2 shaped, {args.layers} layers, {size / 1e6:.0f} MB of safetensors, {args.reps} fresh processes "
          "per case, interleaved\n")
    print("| case | median s | min s | GB/s | vs transformers |\n|---|---:|---:|---:|---:|")
    reference = statistics.median(times["transformers"])
    for case, values in times.items():
        median = statistics.median(values)
        print(f"| {case} | {median:.3f} | {min(values):.3f} | {size / median / 1e9:.2f} | {reference / median:.2f}x |")
    print(f"\nfloor (one save_file): {floor:.3f} s")


if __name__ == "__main__":
    main()
