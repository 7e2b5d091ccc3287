"""Times warpload, its peers and the machine's own limits on one file, warm and cold, side by side."""
from __future__ import annotations

import gc
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from importlib import metadata
from typing import Any, Callable, Optional, Sequence

from ..constants import ENV_HUGE_PAGES, ENV_NUM_THREADS, ENV_READ_METHOD
from ..engine import machine as system

CACHE_STATES = ("warm", "cold")
# Memory-only cases do not read the file, so the page cache does not apply to them.
NO_CACHE = "-"

SAFETENSORS_COPY = "safetensors + copy"
TORCH_LOAD = "torch.load"
# The sequential-read limit reads through one reused 16 MiB buffer: requests as large as a
# loader's, with no page faults on the destination, so it is what the storage path alone allows.
READ_LIMIT = "limit: sequential read"
READ_BUFFER_BYTES = 16 << 20
PAGE_BYTES = 4096

PACKAGES = ("warpload", "torch", "safetensors", "numpy", "fastsafetensors", "runai-model-streamer")


@dataclass(frozen=True)
class Case:
    """One way of getting a file's bytes into memory, timed from call to return."""

    name: str
    run: Callable[[], Any]  # its result stays alive until the clock stops, then is freed
    source: Optional[str]  # the file whose page-cache state matters; None for memory-only cases


@dataclass
class Timing:
    """The repetitions of one case in one cache state, or why it has none."""

    case: str
    cache: str
    seconds: list[float] = field(default_factory=list)
    skipped: Optional[str] = None

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)


@dataclass(frozen=True)
class Settings:
    """How often each case runs, how long to idle before each run, where progress lines go."""

    repeat: int = 5
    # Idle seconds before each timed run. With free page reporting (virtio-balloon), memory free for
    # 2 s (PAGE_REPORTING_DELAY, mm/page_reporting.c) goes back to the host and costs host faults when
    # touched again, as a fresh process's first load pays; without a pause a run reuses what the
    # previous one freed. Measured here: 1.4 GB warm warpload load 0.15-0.26 s without, 1.39 s with 3 s.
    settle_s: float = 0.0
    # Each timed run in a new Python process (torch and the loader's modules imported before the
    # clock starts): no memory freed by an earlier run can be reused, as on a user's first load.
    # In one process, glibc hands the previous run's freed tensors back to per-tensor copies.
    fresh_process: bool = False
    progress: Callable[[str], None] = lambda line: print(line, file=sys.stderr)


@dataclass
class Report:
    path: str
    nbytes: int
    settings: Settings
    timings: list[Timing]
    notes: list[str]
    machine: dict[str, str]
    versions: dict[str, str]


# ---------------------------------------------------------------- what is measured

def sequential_read(path: str) -> int:
    """Reads the whole file through one reused buffer, unbuffered; returns the bytes read."""
    view = memoryview(bytearray(READ_BUFFER_BYTES))
    total = 0
    with open(path, "rb", buffering=0) as handle:
        while count := handle.readinto(view):
            total += count
    return total


def touch_every_page(tensors: dict[str, Any]) -> dict[str, Any]:
    """Reads one byte per page of every tensor, so a lazily mapped load pays for all its pages."""
    import torch

    for tensor in tensors.values():
        if tensor.numel():
            flat = tensor.reshape(-1).view(torch.uint8)
            # Tensors do not start on page boundaries: the strided sample can miss the last page.
            flat[::PAGE_BYTES].sum()
            flat[-1:].sum()
    return tensors


def owned_copies(tensors: dict[str, Any]) -> dict[str, Any]:
    """Copies every tensor into memory it owns, as a model's load_state_dict pays for."""
    return {name: tensor.clone() for name, tensor in tensors.items()}


@dataclass(frozen=True)
class Loader:
    """A way to load a file: `build(path)` imports what it needs and returns (load, file it reads)."""

    label: str
    build: Callable[[str], tuple[Callable[[], Any], str]]

    def case(self, path: str) -> Case:
        """The timed case for `path`; raises ImportError when the library is not installed."""
        run, source = self.build(path)
        return Case(self.label, run, source)


def read_limit_case(path: str) -> Case:
    return Case(READ_LIMIT, lambda: sequential_read(path), path)


# The loaders are imported when a case is built, outside the timed run, as for every peer: `import
# warpload` defers its modules to the first use, which a fresh process would otherwise time.
def warpload_owned(path: str) -> tuple[Callable[[], Any], str]:
    from warpload import load_file

    return lambda: load_file(path), path


def warpload_zero_copy(path: str) -> tuple[Callable[[], Any], str]:
    from warpload import load_file

    return lambda: touch_every_page(load_file(path, zero_copy=True)), path


def warpload_bin(path: str) -> tuple[Callable[[], Any], str]:
    from warpload import load_checkpoint

    bin_path = ensure_torch_bin(path)
    return lambda: load_checkpoint(bin_path), bin_path


def safetensors_copy(path: str) -> tuple[Callable[[], Any], str]:
    from safetensors.torch import load_file

    # safetensors' default backend returns views of a private mmap: the copy is what makes them owned.
    return lambda: owned_copies(load_file(path)), path


def torch_bin_copy(path: str) -> tuple[Callable[[], Any], str]:
    import torch

    bin_path = ensure_torch_bin(path)
    return lambda: owned_copies(torch.load(bin_path, mmap=True, weights_only=True)), bin_path


def torch_bin(path: str) -> tuple[Callable[[], Any], str]:
    import torch

    bin_path = ensure_torch_bin(path)
    # Without mmap torch.load reads every storage into memory it owns: no copy needed.
    return lambda: torch.load(bin_path, weights_only=True), bin_path


def fastsafetensors_load(paths: Sequence[str], device: str, group: Any = None) -> dict[str, Any]:
    """Every tensor of the files through fastsafetensors (without GPUDirect storage) onto device."""
    from fastsafetensors import SafeTensorsFileLoader

    loader = SafeTensorsFileLoader(group, device, nogds=True)
    try:
        loader.add_filenames({0: list(paths)})
        buffer = loader.copy_files_to_device()
        # Its tensors share ownership of the buffer and outlive close() (FilesBufferOnDevice
        # docstring, fastsafetensors 0.5): they are owned already, a copy would be extra.
        tensors = {name: buffer.get_tensor(name) for name in loader.get_keys()}
        buffer.close()
        return tensors
    finally:
        loader.close()


def fastsafetensors_owned(path: str) -> tuple[Callable[[], Any], str]:
    import fastsafetensors  # noqa: F401  (absent: ImportError now, so the case is reported as skipped)

    return lambda: fastsafetensors_load([path], "cpu"), path


def runai_owned(path: str) -> tuple[Callable[[], Any], str]:
    from runai_model_streamer import SafetensorsStreamer

    def load() -> dict[str, Any]:
        # owned=True (its default) hands each tensor to the caller for good: no copy needed.
        with SafetensorsStreamer() as streamer:
            streamer.stream_file(path, owned=True)
            return dict(streamer.get_tensors())

    return load, path


WARPLOAD = {
    "warpload": Loader("warpload", warpload_owned),
    "warpload-zero-copy": Loader("warpload zero-copy, all pages touched", warpload_zero_copy),
    "warpload-bin": Loader("warpload, same weights as .bin", warpload_bin),
}
# Selectable with --peers. Every case ends with tensors that own their memory, except zero-copy.
PEERS = {
    "safetensors": Loader(SAFETENSORS_COPY, safetensors_copy),
    "torch": Loader("torch.load(mmap) + copy", torch_bin_copy),
    "torch-load": Loader(TORCH_LOAD, torch_bin),
    "fastsafetensors": Loader("fastsafetensors (nogds)", fastsafetensors_owned),
    "runai": Loader("runai-model-streamer", runai_owned),
}


def ensure_torch_bin(path: str) -> str:
    """The same weights as a torch.save'd .bin next to `path`, written once (rewritten if older)."""
    bin_path = os.path.splitext(path)[0] + ".bin"
    if os.path.isfile(bin_path) and os.path.getmtime(bin_path) >= os.path.getmtime(path):
        return bin_path
    import torch
    from safetensors.torch import load_file

    from .._fileio import write_atomically

    # Cloned so each tensor has its own storage, as in a pytorch_model.bin saved by transformers.
    write_atomically(bin_path, lambda tmp: torch.save(owned_copies(load_file(path)), tmp))
    return bin_path


def memory_cases(nbytes: int) -> list[Case]:
    """memcpy of nbytes into touched memory, and into fresh 4 KiB or huge pages (first-touch faults paid)."""
    import torch

    source = torch.ones(nbytes, dtype=torch.uint8)
    target = torch.zeros(nbytes, dtype=torch.uint8)
    return [
        Case("limit: memcpy into touched memory", lambda: target.copy_(source), None),
        Case("limit: memcpy into fresh memory", lambda: source.clone(), None),
        Case("limit: memcpy into fresh huge pages", lambda: copy_into_huge_pages(source), None),
    ]


def copy_into_huge_pages(source: Any) -> Any:
    """A copy in a fresh MADV_HUGEPAGE mapping: what warpload's own buffers ask the kernel for."""
    import mmap

    import torch

    region = mmap.mmap(-1, source.numel())
    region.madvise(mmap.MADV_HUGEPAGE)
    return torch.frombuffer(region, dtype=torch.uint8).copy_(source)


# ---------------------------------------------------------------- how it is measured

def set_cache_state(path: str, cache: str) -> Optional[str]:
    """Makes `path` warm (read once) or cold (evicted); returns a note if that did not fully work."""
    from .._native import core

    residency = core().File(path).resident_fraction()
    if cache == "warm" and residency < 1.0:
        sequential_read(path)
        residency = core().File(path).resident_fraction()
    elif cache == "cold":
        core().evict_from_page_cache(path)
        residency = core().File(path).resident_fraction()
    expected = 1.0 if cache == "warm" else 0.0
    if abs(residency - expected) > 0.01:
        return f"{os.path.basename(path)}: {residency:.0%} resident when {cache} was wanted"
    return None


def case_named(name: str, path: str) -> Case:
    """Rebuilds the case called `name` on `path` (in a fresh process); raises KeyError if unknown."""
    if name == READ_LIMIT:
        return read_limit_case(path)
    for loader in [*WARPLOAD.values(), *PEERS.values()]:
        if loader.label == name:
            return loader.case(path)
    for case in memory_cases(os.path.getsize(path)) if name.startswith("limit: memcpy") else []:
        if case.name == name:
            return case
    raise KeyError(f"no benchmark case is called {name!r}")


# The child imports torch first: the import is not what is timed, as in a long-lived server.
CHILD_SCRIPT = """
import sys, torch
from warpload.bench.harness import case_named, time_once
print(time_once(case_named(sys.argv[1], sys.argv[2])))
"""


def time_in_fresh_process(case: Case, path: str) -> float:
    """Seconds one run of `case` takes in a new Python process; raises RuntimeError if it fails."""
    import subprocess

    child = subprocess.run([sys.executable, "-c", CHILD_SCRIPT, case.name, path], capture_output=True, text=True)
    if child.returncode != 0:
        raise RuntimeError(f"{case.name} failed in a fresh process: {child.stderr.strip()[-500:]}")
    return float(child.stdout.strip().splitlines()[-1])


def time_once(case: Case) -> float:
    # Results of the previous run are freed first: a live zero-copy mapping keeps its pages cached.
    gc.collect()
    start = time.perf_counter()
    result = case.run()
    seconds = time.perf_counter() - start
    del result
    gc.collect()
    return seconds


def measure(cases: Sequence[Case], cache: str, settings: Settings, notes: list[str], path: str) -> list[Timing]:
    """Runs every case `repeat` times, cases interleaved so slow drift spreads over all of them."""
    timings = [Timing(case.name, cache) for case in cases]
    for round_index in range(settings.repeat):
        settings.progress(f"{cache}: repetition {round_index + 1}/{settings.repeat}")
        for case, timing in zip(cases, timings):
            if timing.skipped:
                continue
            if case.source is not None:
                note = set_cache_state(case.source, cache)
                if note and note not in notes:
                    notes.append(note)
            time.sleep(settings.settle_s)
            try:
                seconds = time_in_fresh_process(case, path) if settings.fresh_process else time_once(case)
                timing.seconds.append(seconds)
            except Exception as err:  # reported in the table, not hidden
                timing.skipped = f"failed: {type(err).__name__}: {err}"
    return timings


def build_cases(path: str, loaders: Sequence[Loader], caches: Sequence[str]) -> tuple[list[Case], list[Timing]]:
    """The loaders' cases, and a skipped row per cache state for each one that cannot run here."""
    cases, skipped = [], []
    for loader in loaders:
        try:
            cases.append(loader.case(path))
        except Exception as err:  # ImportError for an absent peer, any error while preparing it
            skipped += [Timing(loader.label, cache, skipped=f"{type(err).__name__}: {err}") for cache in caches]
    return cases, skipped


def run_benchmark(path: str, *, caches: Sequence[str] = CACHE_STATES, peers: Sequence[str] = tuple(PEERS),
                  settings: Settings = Settings()) -> Report:
    """Measures every case on `path` in each cache state; returns timings with machine and versions.

    Raises ValueError for an unknown cache state or peer, FileNotFoundError if `path` is missing.
    """
    unknown = [c for c in caches if c not in CACHE_STATES] + [p for p in peers if p not in PEERS]
    if unknown:
        raise ValueError(f"unknown cache state or peer {unknown}: caches are {CACHE_STATES}, peers {tuple(PEERS)}")
    nbytes = os.path.getsize(path)
    notes: list[str] = []
    timings = measure(memory_cases(nbytes), NO_CACHE, settings, notes, path)
    gc.collect()
    loaders = [*WARPLOAD.values(), *(PEERS[peer] for peer in peers)]
    cases, skipped = build_cases(path, loaders, caches)
    cases.insert(0, read_limit_case(path))
    for cache in caches:
        timings += measure(cases, cache, settings, notes, path)
    return Report(path, nbytes, settings, timings + skipped, notes, machine_info(), package_versions())


# ---------------------------------------------------------------- what it ran on

def machine_info() -> dict[str, str]:
    return {
        "cpu": _cpu_model(),
        "cores": f"{len(os.sched_getaffinity(0))} usable of {os.cpu_count()}",
        "ram": f"{_meminfo_gib('MemTotal'):.1f} GiB",
        "kernel": platform.release(),
        "transparent huge pages": _bracketed("/sys/kernel/mm/transparent_hugepage/enabled"),
        "free page reporting": ("on (virtio-balloon)" if system.free_page_reporting() else "off"),
        "python": platform.python_version(),
        ENV_READ_METHOD: os.environ.get(ENV_READ_METHOD, "unset (auto)"),
        ENV_NUM_THREADS: os.environ.get(ENV_NUM_THREADS, "unset (one per core)"),
        ENV_HUGE_PAGES: os.environ.get(ENV_HUGE_PAGES, "unset (auto)")
        + f", huge pages {'on' if system.use_huge_pages() else 'off'}",
        "date": datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
    }


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _meminfo_gib(key: str) -> float:
    with open("/proc/meminfo", encoding="utf-8") as handle:
        for line in handle:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 2**20
    return float("nan")


def _bracketed(sys_path: str) -> str:
    """The selected value of a sysfs choice file such as 'always [madvise] never'."""
    try:
        with open(sys_path, encoding="utf-8") as handle:
            text = handle.read()
    except OSError:
        return "unknown"
    return text[text.find("[") + 1:text.find("]")] if "[" in text else text.strip()


def package_versions(packages: Sequence[str] = PACKAGES) -> dict[str, str]:
    """Installed version of each package, "not installed" for the absent ones."""
    versions = {}
    for package in packages:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return versions


# ---------------------------------------------------------------- how it is shown

COLUMNS = ("case", "cache", "median s", "min s", "GB/s", "vs safetensors+copy", "vs torch.load", "vs seq. read")
CACHE_ORDER = (NO_CACHE, *CACHE_STATES)


def ordered(timings: Sequence[Timing]) -> list[Timing]:
    """Memory limits first, then each cache state's cases in the order they ran."""
    return sorted(timings, key=lambda t: CACHE_ORDER.index(t.cache))


def table_rows(report: Report) -> list[tuple[str, ...]]:
    """One row per timing; speed-up is safetensors+copy time / this time, >1 is faster."""
    by_key = {(t.case, t.cache): t for t in report.timings if not t.skipped}
    rows = []
    for t in ordered(report.timings):
        if t.skipped:
            rows.append((t.case, t.cache, "skipped", "", "", "", "", ""))
            continue
        baseline, limit = by_key.get((SAFETENSORS_COPY, t.cache)), by_key.get((READ_LIMIT, t.cache))
        torch_load = by_key.get((TORCH_LOAD, t.cache))
        rows.append((
            t.case, t.cache, f"{t.median:.3f}", f"{min(t.seconds):.3f}",
            f"{report.nbytes / t.median / 1e9:.2f}",
            f"{baseline.median / t.median:.2f}x" if baseline else "-",
            f"{torch_load.median / t.median:.2f}x" if torch_load else "-",
            f"{limit.median / t.median:.0%}" if limit else "-",
        ))
    return rows


def format_report(report: Report, *, markdown: bool = False) -> str:
    """The run's file, machine and versions, the table, then skip reasons and cache notes."""
    header = [
        f"file: {report.path} ({report.nbytes / 1e9:.2f} GB), {report.settings.repeat} repetitions, "
        f"{report.settings.settle_s:g} s idle before each"
        + (", each in a fresh process (torch imported first)" if report.settings.fresh_process else ""),
        "machine: " + ", ".join(f"{k} {v}" for k, v in report.machine.items()),
        "versions: " + ", ".join(f"{k} {v}" for k, v in report.versions.items()),
    ]
    footer = ["vs safetensors+copy, vs torch.load: its median time over this one's (>1x is faster); "
              "vs seq. read: this speed as a share of the sequential read's in the same cache state"]
    footer += [f"skipped: {t.case} ({t.cache}): {t.skipped}" for t in ordered(report.timings) if t.skipped]
    footer += [f"note: {note}" for note in report.notes]
    rows = table_rows(report)
    if markdown:
        return "\n".join([f"- {line}" for line in header] + ["", markdown_table(rows), ""]
                         + [f"- {line}" for line in footer])
    return "\n".join(header + ["", text_table(rows), ""] + footer)


def text_table(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(row[i]) for row in [COLUMNS, *rows]) for i in range(len(COLUMNS))]
    lines = []
    for row in [COLUMNS, *rows]:
        cells = [row[0].ljust(widths[0]), row[1].ljust(widths[1])]
        cells += [cell.rjust(width) for cell, width in zip(row[2:], widths[2:])]
        lines.append("  ".join(cells).rstrip())
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def markdown_table(rows: list[tuple[str, ...]]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * 2 + "---:|" * (len(COLUMNS) - 2)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)
