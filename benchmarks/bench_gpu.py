"""GPU loading: warpload vs safetensors(device="cuda"), safetensors + pinned .to(cuda) and GPU peers, beside the limits.

One run writes a sharded fp16/bf16 checkpoint (10 GB by default), then times every case on the
same files, warm and cold page cache, interleaved repetition by repetition, next to the pinned
host-to-device bandwidth (one large pinned buffer copied with cudaMemcpyAsync, via torch) and the
disk's sequential read (every shard read cold through 16 MiB buffers, in parallel). Every case ends
with tensors on the GPU that own their memory, and is timed until the device has synchronised.

    python benchmarks/bench_gpu.py --dir /nvme/warpload-bench --size-gb 12 --markdown >> benchmarks/RESULTS.md

The ring is tuned for a whole run with WARPLOAD_CUDA_BUFFERS / WARPLOAD_CUDA_BUFFER_MB (README).
Without a CUDA GPU it says so and exits 0 (it is importable anywhere; tests/test_bench_gpu.py checks).
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Optional, Sequence

from warpload.bench.harness import Timing

GB = 1e9
MIB = 1 << 20
# Llama-like tensor mix: 64 MiB matrices between small norm vectors.
MATRIX_ELEMENTS = 32 * MIB
NORM_ELEMENTS = 4096
H2D_BYTES = 1 << 30
PEER_PACKAGES = ("warpload", "torch", "safetensors", "fastsafetensors", "runai-model-streamer", "instanttensor")
GOALS = ("warm: >= 0.85x pinned H2D and faster than every peer; cold: >= 0.9x disk sequential read; "
         ">= 5x safetensors(device='cuda')")


def no_gpu_reason() -> Optional[str]:
    """Why this machine cannot run the benchmark, or None when it can."""
    try:
        import torch
    except ImportError:
        return "torch is not installed"
    if not torch.cuda.is_available():
        return f"no CUDA GPU (torch {torch.__version__}: torch.cuda.is_available() is False)"
    return None


def write_checkpoint(folder: str, total_bytes: int, dtype: str = "bfloat16", shard_bytes: int = 4 << 30,
                     matrix_elements: int = MATRIX_ELEMENTS) -> list[str]:
    """Shards of random weights totalling about total_bytes plus an index; reused when already there."""
    import torch
    from safetensors.torch import save_file

    manifest = os.path.join(folder, "bench_manifest.json")
    wanted = {"total_bytes": total_bytes, "dtype": dtype, "shard_bytes": shard_bytes, "matrix": matrix_elements}
    if os.path.isfile(manifest):
        with open(manifest, encoding="utf-8") as handle:
            saved = json.load(handle)
        if saved.get("settings") == wanted and all(os.path.isfile(os.path.join(folder, f)) for f in saved["files"]):
            return [os.path.join(folder, f) for f in saved["files"]]
    os.makedirs(folder, exist_ok=True)
    torch_type = getattr(torch, dtype)
    itemsize = torch.empty((), dtype=torch_type).element_size()
    generator = torch.Generator().manual_seed(0)
    shards: list[dict[str, Any]] = [{}]
    shard_size = written = 0
    layer = 0
    while written < total_bytes:
        for kind, count in (("input_norm", NORM_ELEMENTS), ("proj", matrix_elements), ("post_norm", NORM_ELEMENTS)):
            # Random bits (NaNs included): loaders copy bytes, and random data defeats any compression.
            tensor = torch.randint(0, 256, (count * itemsize,), dtype=torch.uint8, generator=generator).view(torch_type)
            if shard_size + tensor.nbytes > shard_bytes and shards[-1]:
                shards.append({})
                shard_size = 0
            shards[-1][f"model.layers.{layer}.{kind}.weight"] = tensor
            shard_size += tensor.nbytes
            written += tensor.nbytes
        layer += 1
    names = [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
    weight_map = {}
    for name, shard in zip(names, shards):
        save_file(shard, os.path.join(folder, name), metadata={"format": "pt"})
        weight_map.update({tensor: name for tensor in shard})
    with open(os.path.join(folder, "model.safetensors.index.json"), "w", encoding="utf-8") as handle:
        json.dump({"metadata": {"total_size": written}, "weight_map": weight_map}, handle)
    with open(manifest, "w", encoding="utf-8") as handle:
        json.dump({"settings": wanted, "files": names}, handle)
    return [os.path.join(folder, name) for name in names]


# ---------------------------------------------------------------- the cases

def warpload_cuda(folder: str, files: Sequence[str]) -> Any:
    import warpload

    return warpload.load_checkpoint(folder, device="cuda")


def warpload_cuda_pread(folder: str, files: Sequence[str]) -> Any:
    """warpload with every file read by pread, even warm ones (its default copies warm files from the mapping)."""
    import warpload
    from warpload.constants import ENV_READ_METHOD

    previous = os.environ.get(ENV_READ_METHOD)
    os.environ[ENV_READ_METHOD] = "pread"
    try:
        return warpload.load_checkpoint(folder, device="cuda")
    finally:
        if previous is None:
            del os.environ[ENV_READ_METHOD]
        else:
            os.environ[ENV_READ_METHOD] = previous


def safetensors_cuda(folder: str, files: Sequence[str]) -> Any:
    from safetensors.torch import load_file

    return {name: t for path in files for name, t in load_file(path, device="cuda").items()}


def safetensors_pinned_copy(folder: str, files: Sequence[str]) -> Any:
    from safetensors.torch import load_file

    out = {}
    for path in files:
        for name, tensor in load_file(path).items():
            out[name] = tensor.pin_memory().to("cuda", non_blocking=True)
    return out


def fastsafetensors_cuda(folder: str, files: Sequence[str]) -> Any:
    from fastsafetensors import SingleGroup

    from warpload.bench.harness import fastsafetensors_load

    return fastsafetensors_load(files, "cuda:0", SingleGroup())


def runai_cuda(folder: str, files: Sequence[str]) -> Any:
    from runai_model_streamer import SafetensorsStreamer

    with SafetensorsStreamer() as streamer:
        streamer.stream_files(list(files), device="cuda", owned=True)
        return dict(streamer.get_tensors())


def instanttensor_cuda(folder: str, files: Sequence[str]) -> Any:
    import torch
    from instanttensor import safe_open

    # Its tensors view a reused internal buffer (its README): clone() is what makes them owned.
    with safe_open(list(files), framework="pt", device=torch.cuda.current_device()) as handle:
        return {name: tensor.clone() for name, tensor in handle.tensors()}


CASES: dict[str, Callable[[str, Sequence[str]], Any]] = {
    "warpload": warpload_cuda,
    "warpload, pread only": warpload_cuda_pread,
    "safetensors device=cuda": safetensors_cuda,
    "safetensors CPU + pinned .to(cuda)": safetensors_pinned_copy,
    "fastsafetensors (nogds)": fastsafetensors_cuda,
    "runai-model-streamer": runai_cuda,
    "instanttensor": instanttensor_cuda,
}
BASELINE = "safetensors device=cuda"


# ---------------------------------------------------------------- limits and cache states

def pinned_h2d_seconds(nbytes: int = H2D_BYTES, repeat: int = 5) -> float:
    """Best time to copy one pinned buffer of nbytes to the GPU (cudaMemcpyAsync, timed by events)."""
    import torch

    host = torch.empty(nbytes, dtype=torch.uint8, pin_memory=True)
    device = torch.empty(nbytes, dtype=torch.uint8, device="cuda")
    best = float("inf")
    for _ in range(repeat):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        device.copy_(host, non_blocking=True)
        end.record()
        end.synchronize()
        best = min(best, start.elapsed_time(end) / 1000)
    return best


def parallel_read(files: Sequence[str]) -> int:
    from warpload.bench.harness import sequential_read

    with ThreadPoolExecutor(max_workers=max(len(files), 1)) as pool:
        return sum(pool.map(sequential_read, files))


def set_cache_state(files: Sequence[str], cache: str) -> list[str]:
    from warpload.bench.harness import set_cache_state as set_one

    return [note for note in (set_one(path, cache) for path in files) if note]


def time_case(run: Callable[[], Any]) -> float:
    import torch

    gc.collect()
    torch.cuda.empty_cache()
    torch.cuda.synchronize()
    start = time.perf_counter()
    result = run()
    torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    del result
    gc.collect()
    torch.cuda.empty_cache()
    return seconds


def run(folder: str, files: Sequence[str], caches: Sequence[str], repeat: int,
        cases: Sequence[str]) -> tuple[list[Timing], list[str]]:
    rows, notes = [], []
    for cache in caches:
        current = [Timing(case, cache) for case in cases]
        if cache == "cold":
            current.insert(0, Timing("limit: disk sequential read", cache))
        for repetition in range(repeat):
            print(f"{cache}: repetition {repetition + 1}/{repeat}", file=sys.stderr)
            for row in current:
                if row.skipped:
                    continue
                notes += [n for n in set_cache_state(files, cache) if n not in notes]
                try:
                    if row.case.startswith("limit"):
                        start = time.perf_counter()
                        parallel_read(files)
                        row.seconds.append(time.perf_counter() - start)
                    else:
                        row.seconds.append(time_case(lambda c=row.case: CASES[c](folder, files)))
                except Exception as err:  # an absent peer or its failure is reported, not hidden
                    row.skipped = f"{type(err).__name__}: {err}"
        rows += current
    return rows, notes


def report(rows: Sequence[Timing], nbytes: int, h2d_s: float, notes: Sequence[str], header: dict[str, str]) -> str:
    """A markdown block: machine and versions, the table (ratios to safetensors cuda and the limits), notes."""
    medians = {(r.case, r.cache): statistics.median(r.seconds) for r in rows if r.seconds and not r.skipped}
    h2d_gbs = H2D_BYTES / h2d_s / GB
    lines = [f"- {key}: {value}" for key, value in header.items()]
    lines += [f"- limit: pinned host-to-device {h2d_gbs:.1f} GB/s (1 GiB, best of 5)",
              f"- goals: {GOALS}", "",
              "| case | cache | median s | GB/s | vs safetensors cuda | vs limit |", "|---|---|---:|---:|---:|---:|"]
    for row in rows:
        if row.skipped or not row.seconds:
            lines.append(f"| {row.case} | {row.cache} | skipped: {row.skipped} | | | |")
            continue
        median = medians[(row.case, row.cache)]
        speed = nbytes / median / GB
        baseline = medians.get((BASELINE, row.cache))
        disk = medians.get(("limit: disk sequential read", row.cache))
        limit = h2d_gbs if row.cache == "warm" else (nbytes / disk / GB if disk else None)
        lines.append(f"| {row.case} | {row.cache} | {median:.3f} | {speed:.2f} | "
                     f"{f'{baseline / median:.2f}x' if baseline else '-'} | "
                     f"{f'{speed / limit:.0%}' if limit else '-'} |")
    lines += ["", "vs limit: warm rows against pinned host-to-device bandwidth, cold rows against the disk's "
              "sequential read"]
    lines += [f"- note: {note}" for note in notes]
    return "\n".join(lines)


def header_info(folder: str, files: Sequence[str], nbytes: int, dtype: str, repeat: int) -> dict[str, str]:
    import torch

    from warpload.bench.harness import machine_info, package_versions

    versions = package_versions(PEER_PACKAGES)
    properties = torch.cuda.get_device_properties(0)
    return {
        "gpu": f"{properties.name}, {properties.total_memory / 2**30:.0f} GiB, CUDA {torch.version.cuda}",
        "checkpoint": f"{folder}: {len(files)} shards, {nbytes / GB:.2f} GB, {dtype}, {repeat} repetitions",
        "machine": ", ".join(f"{k} {v}" for k, v in machine_info().items()),
        "versions": ", ".join(f"{k} {v}" for k, v in versions.items()),
    }


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", default=os.path.join(os.path.expanduser("~"), ".cache", "warpload", "bench-gpu"))
    parser.add_argument("--size-gb", type=float, default=10.0)
    parser.add_argument("--dtype", choices=("bfloat16", "float16"), default="bfloat16")
    parser.add_argument("--shard-gb", type=float, default=4.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--caches", default="warm,cold")
    parser.add_argument("--cases", default=",".join(CASES), help="comma-separated, from: " + ", ".join(CASES))
    args = parser.parse_args(argv)
    reason = no_gpu_reason()
    if reason is not None:
        print(f"bench_gpu: skipped: {reason}")
        return 0
    cases = [case.strip() for case in args.cases.split(",") if case.strip()]
    unknown = [case for case in cases if case not in CASES]
    if unknown:
        parser.skipped(f"unknown cases {unknown}; choose from {list(CASES)}")
    files = write_checkpoint(args.dir, int(args.size_gb * GB), args.dtype, int(args.shard_gb * GB))
    nbytes = sum(os.path.getsize(path) for path in files)
    h2d_s = pinned_h2d_seconds()
    rows, notes = run(args.dir, files, args.caches.split(","), args.repeat, cases)
    print(report(rows, nbytes, h2d_s, notes, header_info(args.dir, files, nbytes, args.dtype, args.repeat)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
