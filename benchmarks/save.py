"""save_file: warpload vs safetensors.torch.save_file on a GPT-2-medium-shaped fp32 state dict (1.42 GB), warm.

Each run is a fresh process: it builds the state dict in memory (every page touched), deletes the output file left
by the run before, then times one save into the page cache (no fsync, as neither library syncs). Cases are
interleaved, run after run; the table gives medians. The limit is one sequential write() of a buffer of the same
size from Python. warpload's three write methods (csrc/writer.h) are measured too, to choose its default.

    python benchmarks/save.py --repeat 5 [--out-dir DIR]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

CASES = {
    "safetensors.torch.save_file": "safetensors",
    "warpload.save_file (one sequential pwritev pass, the default)": "warpload",
    "warpload.save_file, pwritev from every thread": "warpload:0",
    "warpload.save_file, shared mapping filled by every thread": "warpload:2",
    "limit: one write() of the same bytes": "limit",
}


def run_case(kind: str, path: str, model: str) -> float:
    """Runs in the child process: builds the state dict, times one save of it into path."""
    import torch

    from warpload.bench.synthetic import SHAPES, gpt2_tensor_shapes

    shapes = gpt2_tensor_shapes(SHAPES[model])
    if kind == "limit":  # one buffer of the same size, and nothing freed just before the clock starts
        flat = torch.full((sum(torch.Size(shape).numel() for shape in shapes.values()),), 0.02)
    else:
        tensors = {name: torch.full(shape, 0.02) for name, shape in shapes.items()}
    if os.path.exists(path):
        os.unlink(path)
    if kind == "safetensors":
        from safetensors.torch import save_file as save
    elif kind.startswith("warpload"):
        import warpload
        from warpload.engine import writer

        method = kind.partition(":")[2]
        if method:
            writer._WRITE_METHOD = int(method)
        save = warpload.save_file
    else:
        def save(_: object, target: str) -> None:
            with open(target, "wb") as handle:
                handle.write(memoryview(flat.numpy()).cast("B"))
    start = time.perf_counter()
    save(None if kind == "limit" else tensors, path)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--model", default="gpt2-medium")
    parser.add_argument("--out-dir", default=os.path.expanduser("~/.cache/warpload"))
    parser.add_argument("--child", nargs=2, metavar=("KIND", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_case(args.child[0], args.child[1], args.model)))
        return 0
    os.makedirs(args.out_dir, exist_ok=True)
    path = os.path.join(args.out_dir, "save-bench.safetensors")
    times: dict[str, list[float]] = {label: [] for label in CASES}
    for _ in range(args.repeat):
        for label, kind in CASES.items():
            out = subprocess.run([sys.executable, __file__, "--model", args.model, "--child", kind, path],
                                 check=True, capture_output=True, text=True).stdout
            times[label].append(json.loads(out))
    size = os.path.getsize(path)
    os.unlink(path)
    import safetensors
    import torch

    import warpload

    peer = statistics.median(times["safetensors.torch.save_file"])
    print(f"- {args.model} fp32, {size / 1e9:.2f} GB, {args.repeat} runs per case, each in a fresh process, "
          f"interleaved, into {args.out_dir} (page cache, no fsync); {os.cpu_count()} cores")
    print(f"- versions: warpload {warpload.__version__}, safetensors {safetensors.__version__}, "
          f"torch {torch.__version__}")
    print("\n| case | median s | min s | GB/s | vs safetensors |\n|---|---:|---:|---:|---:|")
    for label, values in times.items():
        median = statistics.median(values)
        print(f"| {label} | {median:.3f} | {min(values):.3f} | {size / median / 1e9:.2f} | {peer / median:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
