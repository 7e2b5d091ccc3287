"""The single progress line of a long load: bytes the engine has finished, rewritten in place on stderr."""
from __future__ import annotations

import os
import sys
import threading
import time
from typing import Any, Optional, TextIO

from ..engine.progress import counting, new_counter

# A load shows the line when it has at least this many bytes to read and still runs after
# PROGRESS_AFTER_S: short loads (most loads from the page cache) stay silent, like transformers'
# bars that only show on loads that take a while.
PROGRESS_MIN_BYTES = 256 << 20
PROGRESS_AFTER_S = 1.0
# How often the line is rewritten: often enough to look live, rare enough to cost nothing.
PROGRESS_REFRESH_S = 0.2


def progress_enabled(stream: TextIO) -> bool:
    """Whether a progress line may be written: `stream` is a terminal and HF_HUB_DISABLE_PROGRESS_BARS is not
    true (huggingface_hub's switch and its reading of it, so one setting silences downloads and loading alike)."""
    if os.environ.get("HF_HUB_DISABLE_PROGRESS_BARS", "").strip().upper() in ("1", "ON", "YES", "TRUE"):
        return False
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


class LoadProgress:
    """A context manager around a load: inside it current_counter() gives the engine calls (execute,
    cuda_execute, prefault) a counter they advance chunk by chunk with the GIL released; a daemon
    thread reads it and rewrites one line on `stream` while the load runs past PROGRESS_AFTER_S.

    `total_bytes` (None when unknown, as for shards still downloading without an index total)
    gives the percentage. When the line cannot show (not a terminal, HF_HUB_DISABLE_PROGRESS_BARS,
    a small load) `counter` is None and no thread starts, so the engine pays nothing.
    """

    def __init__(self, total_bytes: Optional[int], stream: Optional[TextIO] = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.total_bytes = total_bytes
        watched = progress_enabled(self.stream) and (total_bytes is None or total_bytes >= PROGRESS_MIN_BYTES)
        self.counter: Optional[Any] = None
        if watched:
            self.counter = new_counter()
        self.shown = False
        self._started = time.perf_counter()
        self._done = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._counting = counting(self.counter)

    def __enter__(self) -> "LoadProgress":
        self._counting.__enter__()
        if self.counter is not None:
            self._thread = threading.Thread(target=self._watch, name="warpload-progress", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, exc_type: object, *exc_info: object) -> None:
        self._counting.__exit__(None, None, None)
        self._done.set()
        if self._thread is not None:
            self._thread.join()
        if self.shown:
            # A finished load reads as finished even where a copy bypassed the engine (tied slices).
            finished = self.total_bytes if exc_type is None and self.total_bytes is not None else None
            self._write(finished)
            self.stream.write("\n")
            self.stream.flush()

    def _watch(self) -> None:
        if self._done.wait(max(0.0, PROGRESS_AFTER_S - (time.perf_counter() - self._started))):
            return
        while True:
            self._write(None)
            self.shown = True
            if self._done.wait(PROGRESS_REFRESH_S):
                return

    def _write(self, loaded: Optional[int]) -> None:
        if loaded is None:
            loaded = self.counter.bytes if self.counter is not None else 0
        elapsed = time.perf_counter() - self._started
        if self.total_bytes:
            loaded = min(loaded, self.total_bytes)
            amount = f"{loaded / 1e9:.2f}/{self.total_bytes / 1e9:.2f} GB ({100 * loaded // self.total_bytes}%)"
        else:
            amount = f"{loaded / 1e9:.2f} GB"
        self.stream.write(f"\rLoading weights: {amount} in {elapsed:.1f} s")
        self.stream.flush()
