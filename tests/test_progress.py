"""The progress line of long loads (progress.py) and the engine's byte counter behind it."""
from __future__ import annotations

import io
import os
import re
import sys
import threading

import pytest
import torch
from safetensors.torch import save_file

pytest.importorskip("transformers")

import warpload  # noqa: E402
from conftest import Terminal  # noqa: E402
from model_checkpoints import FORMATS, save_checkpoint, tiny_transformers_model  # noqa: E402
from warpload._native import core
from warpload.engine import mapped, progress
from warpload.formats.checkpoint import checkpoint_records as read_records  # noqa: E402
from warpload.loading import pretrained, progress_line
from warpload.loading.progress_line import LoadProgress
from warpload.plan import plan_load, stored_bytes  # noqa: E402

LINE = re.compile(r"\rLoading weights: (\d+\.\d\d)/(\d+\.\d\d) GB \((\d+)%\) in \d+\.\d s")


@pytest.fixture
def eager(monkeypatch):
    """Every load shows its line at once, refreshed every 10 ms, whatever its size."""
    monkeypatch.setattr(progress_line, "PROGRESS_MIN_BYTES", 0)
    monkeypatch.setattr(progress_line, "PROGRESS_AFTER_S", 0.0)
    monkeypatch.setattr(progress_line, "PROGRESS_REFRESH_S", 0.01)
    monkeypatch.delenv("HF_HUB_DISABLE_PROGRESS_BARS", raising=False)


@pytest.fixture
def checkpoint(tmp_path):
    """A 12 MiB safetensors file of three tensors (f32, bf16, f16) and its tensor bytes."""
    tensors = {"a": torch.randn(1024, 1024), "b": torch.randn(2048, 1024).bfloat16(),
               "c": torch.randn(1024, 2048).half()}
    path = tmp_path / "model.safetensors"
    save_file(tensors, path)
    return path, sum(t.numel() * t.element_size() for t in tensors.values())


@pytest.mark.parametrize("dtype", [None, torch.bfloat16], ids=["copy", "convert"])
def test_engine_counts_every_source_byte_of_a_plan(eager, checkpoint, dtype):
    path, nbytes = checkpoint
    with LoadProgress(nbytes, Terminal()) as watched:
        warpload.load_checkpoint(path, dtype=dtype)
    assert watched.counter.bytes == nbytes


def test_prefault_counts_the_mapped_bytes(eager, checkpoint):
    path, nbytes = checkpoint
    plan = plan_load(read_records(os.fspath(path)))
    files = {os.fspath(path): core().File(os.fspath(path))}
    with LoadProgress(nbytes, Terminal()) as watched:
        mapped.prefault(plan, files)
    # The tensors' bytes, not the whole pages the prefault maps around them.
    assert watched.counter.bytes == nbytes


def test_nothing_counts_outside_a_watched_load(checkpoint):
    assert progress.current_counter() is None
    with LoadProgress(10**12, io.StringIO()) as unwatched:  # not a terminal: no counter at all
        assert progress.current_counter() is None
        warpload.load_checkpoint(checkpoint[0])
    assert unwatched.counter is None and unwatched.shown is False


def test_concurrent_loads_keep_their_own_counters(eager, tmp_path):
    sizes = {"small": (256, 256), "large": (2048, 1024)}
    paths = {}
    for name, shape in sizes.items():
        paths[name] = tmp_path / f"{name}.safetensors"
        save_file({"w": torch.randn(shape)}, paths[name])
    counted = {}

    def load(name: str) -> None:
        with LoadProgress(1, Terminal()) as watched:
            for _ in range(20):
                warpload.load_checkpoint(paths[name])
        counted[name] = watched.counter.bytes

    threads = [threading.Thread(target=load, args=(name,)) for name in sizes]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert counted == {name: 20 * 4 * rows * cols for name, (rows, cols) in sizes.items()}


def test_line_is_rewritten_while_the_load_runs_and_ends_finished(eager, checkpoint):
    path, nbytes = checkpoint
    out = Terminal()
    with LoadProgress(nbytes, out):
        seen_before_load = out.getvalue()
        warpload.load_checkpoint(path)
        threading.Event().wait(0.05)
    lines = LINE.findall(out.getvalue())
    assert seen_before_load.startswith("\rLoading weights: 0.00/0.01 GB (0%)"), seen_before_load
    assert len(lines) >= 3
    assert [int(percent) for _, _, percent in lines] == sorted(int(percent) for _, _, percent in lines)
    assert lines[-1][2] == "100" and out.getvalue().endswith("\n") and out.getvalue().count("\n") == 1


def test_a_failed_load_shows_what_was_loaded_not_100_percent(eager, checkpoint):
    path, nbytes = checkpoint
    out = Terminal()
    with pytest.raises(KeyError), LoadProgress(4 * nbytes, out):
        warpload.load_checkpoint(path)
        raise KeyError("the load failed after one file")
    last = LINE.findall(out.getvalue())[-1]
    assert last[2] == "25" and out.getvalue().endswith("\n")


def test_unknown_total_shows_bytes_only(eager, checkpoint):
    out = Terminal()
    with LoadProgress(None, out):
        warpload.load_checkpoint(checkpoint[0])
    assert re.fullmatch(r"(\rLoading weights: \d+\.\d\d GB in \d+\.\d s)+\n", out.getvalue()), out.getvalue()


@pytest.mark.parametrize("stream, disabled, shown", [(io.StringIO, "", False), (Terminal, "1", False),
                                                     (Terminal, "true", False), (Terminal, "", True),
                                                     (Terminal, "0", True)],
                         ids=["not-a-terminal", "disabled-1", "disabled-true", "terminal", "terminal-disabled-0"])
def test_line_only_on_a_terminal_without_hf_hub_disable_progress_bars(eager, monkeypatch, checkpoint, stream,
                                                                      disabled, shown):
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", disabled)
    out = stream()
    with LoadProgress(checkpoint[1], out):
        warpload.load_checkpoint(checkpoint[0])
    assert bool(out.getvalue()) == shown


@pytest.fixture(scope="module")
def gpt2_checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("progress")
    return {fmt: save_checkpoint(tiny_transformers_model("gpt2"), root / fmt, fmt) for fmt in FORMATS}


def _storage_bytes(folder) -> int:
    """Bytes of the checkpoint's distinct storages (a .bin stores tied tensors once)."""
    return stored_bytes(read_records(os.fspath(folder)))


@pytest.mark.parametrize("backend", ["warpload", "transformers"])
@pytest.mark.parametrize("zero_copy", [False, True], ids=["owned", "mapped"])
@pytest.mark.parametrize("fmt", FORMATS)
def test_from_pretrained_shows_one_line_counting_the_checkpoint(eager, monkeypatch, gpt2_checkpoints, fmt, zero_copy,
                                                                backend):
    watched: list[LoadProgress] = []

    class Recorded(LoadProgress):
        def __enter__(self) -> LoadProgress:
            watched.append(self)
            return super().__enter__()

    monkeypatch.setattr(pretrained, "LoadProgress", Recorded)
    monkeypatch.setattr(sys, "stderr", Terminal())
    pretrained.from_pretrained(gpt2_checkpoints[fmt], zero_copy=zero_copy, backend=backend)
    text = sys.stderr.getvalue()
    total = _storage_bytes(gpt2_checkpoints[fmt])
    assert len(watched) == 1 and watched[0].total_bytes == total
    # Every stored byte went through the engine once (copies, or the prefault of the mapping).
    assert watched[0].counter.bytes == total
    assert text.count("\n") == 1 and text.endswith("\n") and LINE.findall(text)[-1][2] == "100", text


def test_from_pretrained_of_a_small_model_stays_silent_by_default(monkeypatch, gpt2_checkpoints):
    monkeypatch.delenv("HF_HUB_DISABLE_PROGRESS_BARS", raising=False)
    monkeypatch.setattr(sys, "stderr", Terminal())
    pretrained.from_pretrained(gpt2_checkpoints["safetensors"])
    assert sys.stderr.getvalue() == ""
