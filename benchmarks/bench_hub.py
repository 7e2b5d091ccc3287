"""Time to a loaded model from an empty cache through a bandwidth-limited loopback Hub: warpload vs transformers.

Serves a sharded GPT-2-shaped checkpoint with olah (tests/hub_server.py: git repo, olah, a front
that paces every file download through one shared link) and measures, per link rate, with a fresh
cache each time: the pure download (huggingface_hub.snapshot_download of the same files), warpload's
from_pretrained and transformers' from_pretrained. The goal (issue 7) is warpload within 10% of the
pure download; the ratio column shows how far each loader is from it. For warpload the columns
from model.load_timings.shards show the overlap: when the first shard's load started, when the
last shard landed in the cache, and what was left to do after that; next to it, the same
from_pretrained from the warm cache (local_files_only), i.e. the load that overlapping hides.

    .venv/bin/python benchmarks/bench_hub.py --size-mb 256 --rates-mb 200 1000
"""
from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, os.fspath(Path(__file__).resolve().parents[1] / "tests"))

REPO = "bench/gpt2-sharded"


def build_repo(mirrors: Path, size_mb: int) -> None:
    import torch
    import transformers

    # ~12.6 M parameters per layer at n_embd=1024: layers chosen for the requested fp32 size.
    layers = max(1, round(size_mb * 2**20 / 4 / (12 * 1024 * 1024)))
    config = transformers.GPT2Config(n_embd=1024, n_layer=layers, n_head=16, vocab_size=8192, n_positions=256)
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(config)
    repo = mirrors / "models" / REPO
    repo.mkdir(parents=True)
    model.save_pretrained(repo, max_shard_size="64MB")
    git = ["git", "-c", "user.name=bench", "-c", "user.email=bench@example.com", "-c", "core.compression=0"]
    subprocess.run([*git, "init", "-q", "-b", "main"], cwd=repo, check=True)
    subprocess.run([*git, "add", "-A"], cwd=repo, check=True)
    subprocess.run([*git, "commit", "-q", "-m", "bench"], cwd=repo, check=True)


def timed(function) -> float:
    started = time.perf_counter()
    function()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=256, help="checkpoint size in MB (fp32)")
    parser.add_argument("--rates-mb", type=float, nargs="+", default=[200.0, 1000.0], help="link rates, MB/s")
    args = parser.parse_args()

    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    root = Path(tempfile.mkdtemp(prefix="bench_hub_"))
    mirrors = root / "mirrors"
    build_repo(mirrors, args.size_mb)

    import hub_server

    olah = hub_server.OlahServer(root, mirrors, probe_repo=REPO)
    front = hub_server.FrontServer(olah.port, mirrors)
    os.environ["HF_ENDPOINT"] = front.endpoint
    import huggingface_hub
    import transformers

    from warpload.models.auto import AutoModelForCausalLM

    huggingface_hub.constants.ENDPOINT = front.endpoint
    huggingface_hub.constants.HUGGINGFACE_CO_URL_TEMPLATE = front.endpoint + "/{repo_id}/resolve/{revision}/{filename}"
    size = sum(path.stat().st_size for path in (mirrors / "models" / REPO).glob("*.safetensors"))
    print(f"# bench_hub {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {platform.node()}, {os.cpu_count()} CPUs, "
          f"torch {__import__('torch').__version__}, transformers {transformers.__version__}, huggingface_hub "
          f"{huggingface_hub.__version__}; checkpoint {size / 1e6:.0f} MB in "
          f"{len(list((mirrors / 'models' / REPO).glob('*.safetensors')))} shards")
    print("| link MB/s | download s | warpload s | ratio | first shard loaded at s | last shard landed at s "
          "| load after it s | load from warm cache s | transformers s | ratio |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    try:
        caches = iter(range(10**6))

        def cache() -> str:
            return os.fspath(root / f"cache{next(caches)}")

        for rate in args.rates_mb:
            front.link = hub_server.Link(rate * 1e6)

            download = timed(lambda: huggingface_hub.snapshot_download(
                REPO, cache_dir=cache(), allow_patterns=["*.json", "*.safetensors"]))
            started = time.perf_counter()
            last_cache = cache()
            model = AutoModelForCausalLM.from_pretrained(REPO, cache_dir=last_cache)
            ours = time.perf_counter() - started
            # load_timings.shards: when each shard landed and was loaded, from the call's start.
            shards = model.load_timings.shards
            del model
            # The same load from the now warm cache: what overlapping had to hide.
            started = time.perf_counter()
            AutoModelForCausalLM.from_pretrained(REPO, cache_dir=last_cache, local_files_only=True)
            cached = time.perf_counter() - started
            first_load = min(shard.load_start_s for shard in shards)
            last_landed = max(shard.landed_s for shard in shards)
            theirs = timed(lambda: transformers.AutoModelForCausalLM.from_pretrained(REPO, cache_dir=cache()))
            print(f"| {rate:.0f} | {download:.2f} | {ours:.2f} | {ours / download:.2f} | {first_load:.2f} | "
                  f"{last_landed:.2f} | {ours - last_landed:.2f} | {cached:.2f} | {theirs:.2f} | "
                  f"{theirs / download:.2f} |")
    finally:
        front.close()
        olah.close()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
