"""Time to a loaded model from an empty cache through a bandwidth-limited loopback Hub: warpload vs transformers.

Serves a sharded GPT-2-shaped checkpoint the way the Hub does (tests/hub_server.py: a git repo
whose shards are git-LFS objects, tests/hub_lfs.py; olah answers the listing and small files, the
front sends LFS bodies from disk with sendfile through one shared paced link). The front runs in
its own process, so its threads never hold the measured process's GIL; the bench sets its link
rate per row over a pipe (0: unpaced). Per rate, each run in fresh caches, repeated and reported
as medians: the pure download (huggingface_hub.snapshot_download of the same files), warpload's
from_pretrained and transformers' from_pretrained, with each one's ratio to the pure download.
The goal (issue 7) is warpload within 10% of the pure download, the load hidden behind it.
For warpload, the columns from model.load_timings.shards show the overlap: when the first shard's
load started, when the last shard landed in the cache (downloaded and its sha256 checked), and
what was left to do after that; next to it, the same from_pretrained from the warm cache
(local_files_only), i.e. the load that overlapping hides. Above the table: the server's raw
throughput (one client, bodies dropped); the download column at link 0 is huggingface_hub's limit
on this machine. An HTML comment after each row gives the per-run ratios and the load average.

    .venv/bin/python benchmarks/bench_hub.py --size-mb 1100 --rates-mb 200 1000 0 --repeat 3
"""
from __future__ import annotations

import argparse
import http.client
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, os.fspath(Path(__file__).resolve().parents[1] / "tests"))

from hub_lfs import track_lfs  # noqa: E402

REPO = "bench/gpt2-sharded"
COLUMNS = ("download", "warpload", "first_load", "last_landed", "after_landed", "warm", "transformers")


def build_repo(mirrors: Path, size_mb: int) -> Path:
    """The checkpoint as a git repo with LFS shards under mirrors/models/REPO; returns its folder."""
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
    git = ["git", "-c", "user.name=bench", "-c", "user.email=bench@example.com"]
    subprocess.run([*git, "init", "-q", "-b", "main"], cwd=repo, check=True)
    track_lfs(repo)  # shards as LFS, as on the Hub: the front sends them from disk
    subprocess.run([*git, "add", "-A"], cwd=repo, check=True)
    subprocess.run([*git, "commit", "-q", "-m", "bench"], cwd=repo, check=True)
    return repo


def serve(olah_port: int, mirrors: str) -> None:
    """Runs one front, prints its endpoint, then sets its link to each rate (MB/s, 0: unpaced) read from stdin,
    answering "ok" to each, until stdin closes."""
    import hub_server

    front = hub_server.FrontServer(olah_port, Path(mirrors))
    print(front.endpoint, flush=True)
    for line in sys.stdin:
        rate_mb = float(line)
        front.link = hub_server.Link(rate_mb * 1e6) if rate_mb > 0 else None
        print("ok", flush=True)
    front.close()


class Front:
    """The front in its own process (bench_hub.py --serve), so that its threads never hold the measured
    process's GIL; one endpoint for the whole run (transformers keeps the endpoint it saw at import)."""

    def __init__(self, olah_port: int, mirrors: Path) -> None:
        self.process = subprocess.Popen([sys.executable, __file__, "--serve", str(olah_port), os.fspath(mirrors)],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.endpoint = self.process.stdout.readline().strip()
        if not self.endpoint:
            raise RuntimeError(f"the front process exited ({self.process.wait()}) before serving")

    def pace(self, rate_mb: float) -> None:
        """Sets the front's shared link to `rate_mb` MB/s (0: unpaced) and waits until it is in place."""
        self.process.stdin.write(f"{rate_mb}\n")
        self.process.stdin.flush()
        if self.process.stdout.readline().strip() != "ok":
            raise RuntimeError(f"the front process exited ({self.process.wait()})")

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(30)


def point_huggingface_hub_at(endpoint: str) -> None:
    """HF_ENDPOINT for this process (huggingface_hub read it at import) and its children."""
    import huggingface_hub

    os.environ["HF_ENDPOINT"] = endpoint
    huggingface_hub.constants.ENDPOINT = endpoint
    huggingface_hub.constants.HUGGINGFACE_CO_URL_TEMPLATE = endpoint + "/{repo_id}/resolve/{revision}/{filename}"


def raw_get_mb_s(endpoint: str, names: list[str]) -> float:
    """MB/s of plain GETs of `names` from the front, one after another on one connection, bodies dropped."""
    url = urllib.parse.urlsplit(endpoint)
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=60)
    buffer = memoryview(bytearray(8 << 20))
    received = 0
    started = time.perf_counter()
    for name in names:
        connection.request("GET", f"/{REPO}/resolve/main/{name}")
        response = connection.getresponse()
        while count := response.readinto(buffer):
            received += count
    elapsed = time.perf_counter() - started
    connection.close()
    return received / elapsed / 1e6


def measure_once(root: Path, run: int) -> dict[str, float]:
    """One repetition at the current endpoint: every column, each loader in its own fresh cache."""
    import huggingface_hub
    import transformers

    from warpload.loading.auto import AutoModelForCausalLM

    def fresh(tag: str) -> str:
        return os.fspath(root / f"cache-{run}-{tag}")

    started = time.perf_counter()
    huggingface_hub.snapshot_download(REPO, cache_dir=fresh("download"), allow_patterns=["*.json", "*.safetensors"])
    row = {"download": time.perf_counter() - started}
    started = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(REPO, cache_dir=fresh("warpload"))
    row["warpload"] = time.perf_counter() - started
    # load_timings.shards: when each shard landed and was loaded, from the call's start.
    shards = model.load_timings.shards
    del model
    row["first_load"] = min(shard.load_start_s for shard in shards)
    row["last_landed"] = max(shard.landed_s for shard in shards)
    row["after_landed"] = row["warpload"] - row["last_landed"]
    # The same load from the now warm cache: what overlapping had to hide.
    started = time.perf_counter()
    AutoModelForCausalLM.from_pretrained(REPO, cache_dir=fresh("warpload"), local_files_only=True)
    row["warm"] = time.perf_counter() - started
    started = time.perf_counter()
    model = transformers.AutoModelForCausalLM.from_pretrained(REPO, cache_dir=fresh("transformers"))
    row["transformers"] = time.perf_counter() - started
    del model
    for tag in ("download", "warpload", "transformers"):
        shutil.rmtree(fresh(tag), ignore_errors=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=256, help="checkpoint size in MB (fp32)")
    parser.add_argument("--rates-mb", type=float, nargs="+", default=[200.0, 1000.0],
                        help="link rates, MB/s (0: unthrottled)")
    parser.add_argument("--repeat", type=int, default=3, help="repetitions per rate (medians reported)")
    parser.add_argument("--serve", nargs=2, metavar=("OLAH_PORT", "MIRRORS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(int(args.serve[0]), args.serve[1])
        return

    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    root = Path(tempfile.mkdtemp(prefix="bench_hub_"))
    mirrors = root / "mirrors"
    repo = build_repo(mirrors, args.size_mb)

    import huggingface_hub
    import torch
    import transformers

    import hub_server

    olah = hub_server.OlahServer(root, mirrors, probe_repo=REPO)
    shards = sorted(path.name for path in repo.glob("*.safetensors"))
    size = sum((repo / name).stat().st_size for name in shards)
    front = Front(olah.port, mirrors)
    try:
        point_huggingface_hub_at(front.endpoint)
        front.pace(0)
        raw = statistics.median(raw_get_mb_s(front.endpoint, shards) for _ in range(3))
        # A first download pays for imports and first connections (~2x slower here): keep it out of the rows.
        huggingface_hub.snapshot_download(REPO, cache_dir=os.fspath(root / "cache-warmup"),
                                          allow_patterns=["*.json", "*.safetensors"])
        shutil.rmtree(root / "cache-warmup")
        print(f"# bench_hub {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {platform.node()}, {os.cpu_count()} CPUs, "
              f"load {os.getloadavg()[0]:.2f}, torch {torch.__version__}, transformers {transformers.__version__}, "
              f"huggingface_hub {huggingface_hub.__version__}; checkpoint {size / 1e6:.0f} MB in {len(shards)} LFS "
              f"shards; medians of {args.repeat}")
        print(f"# server limit, unpaced: {raw:.0f} MB/s (http.client GET of every shard in turn, bodies dropped); "
              "huggingface_hub's own limit is the download column at link 0")
        print("| link MB/s | download s | warpload s | ratio | first shard loaded at s | last shard landed at s "
              "| load after it s | load from warm cache s | transformers s | ratio |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        for rate in args.rates_mb:
            front.pace(rate)
            rows = [measure_once(root, run) for run in range(args.repeat)]
            median = {column: statistics.median(row[column] for row in rows) for column in COLUMNS}
            ratios = [row["warpload"] / row["download"] for row in rows]
            print(f"| {rate:.0f} | {median['download']:.2f} | {median['warpload']:.2f} | "
                  f"{statistics.median(ratios):.2f} | {median['first_load']:.2f} | {median['last_landed']:.2f} | "
                  f"{median['after_landed']:.2f} | {median['warm']:.2f} | {median['transformers']:.2f} | "
                  f"{statistics.median(row['transformers'] / row['download'] for row in rows):.2f} |", flush=True)
            print(f"<!-- rate {rate:.0f}: warpload/download per run {', '.join(f'{r:.2f}' for r in ratios)}; "
                  f"load {os.getloadavg()[0]:.2f} -->", flush=True)
    finally:
        front.close()
        olah.close()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
