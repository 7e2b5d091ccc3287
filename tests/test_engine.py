"""The C++ engine through warpload._core: read methods, thread counts, chunking, and typed errors for bad plans."""
from __future__ import annotations

import errno
import subprocess
import sys
import threading
from array import array

import pytest
import torch
from safetensors.torch import load_file as st_load_file
from safetensors.torch import save_file

import warpload
from warpload import constants
from warpload.engine import core
from warpload.errors import CheckpointError, EngineIOError

from conftest import assert_same_state


@pytest.fixture
def mixed_file(tmp_path):
    """Tensors smaller and larger than an engine chunk (4 MiB), plus thousands of tiny ones."""
    tensors = {"big": torch.randn(3 * 1024 * 1024 + 17), "mid": torch.randn(1000, 33).to(torch.bfloat16)}
    tensors.update({f"tiny.{i}": torch.full((i % 5,), float(i)) for i in range(3000)})
    path = tmp_path / "mixed.safetensors"
    save_file(tensors, path)
    return str(path)


@pytest.mark.parametrize("method", ["auto", "mmap", "pread"])
@pytest.mark.parametrize("threads", ["1", "3"])
@pytest.mark.parametrize("dtype", [None, torch.float16])
def test_every_read_method_and_thread_count_gives_the_same_tensors(mixed_file, monkeypatch, method, threads, dtype):
    monkeypatch.setenv("WARPLOAD_READ_METHOD", method)
    monkeypatch.setenv("WARPLOAD_NUM_THREADS", threads)
    expected = st_load_file(mixed_file)
    loaded = warpload.load_file(mixed_file, dtype=dtype)
    assert_same_state(loaded, expected, convert=None if dtype is None else lambda t: t.to(dtype))


def test_cold_file_is_read_correctly_after_eviction(mixed_file):
    core().evict_from_page_cache(mixed_file)
    expected = st_load_file(mixed_file)
    core().evict_from_page_cache(mixed_file)
    loaded = warpload.load_file(mixed_file)
    assert_same_state(loaded, expected)


def _run(files, rows):
    """Runs plan rows; 6-column rows are plain copies (no transposition)."""
    table = array("q", [value for row in rows for value in (tuple(row) + (0, 0))[:8]])
    core().execute(files, table, warm_fraction=constants.MAP_WARM_FRACTION)


def test_plan_reading_past_the_end_names_the_file_and_range(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(bytes(100))
    out = torch.empty(64, dtype=torch.uint8)
    with pytest.raises(CheckpointError, match=r"f\.bin.*\[50, 50\+64\).*100 bytes") as caught:
        _run([core().File(str(path))], [(0, 50, 64, 0, out.data_ptr(), 0)])
    assert caught.value.path == str(path) and caught.value.offset == 50


def test_plan_with_offset_overflow_is_refused(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(bytes(100))
    out = torch.empty(8, dtype=torch.uint8)
    with pytest.raises(CheckpointError, match="past the end"):
        _run([core().File(str(path))], [(0, 2**63 - 4, 8, 0, out.data_ptr(), 0)])


@pytest.mark.parametrize("row,message", [
    ((1, 0, 8, 0, 1, 0), "file index 1, but there are 1 files"),
    ((0, 0, 3, 2, 1, 2), "whole number of elements"),
    ((0, 0, 8, 0, 0, 0), "null destination"),
    ((0, 0, 8, 10, 1, 0), "unknown dtype"),
    ((0, -1, 8, 0, 1, 0), "negative"),
    ((0, 0, 8, 0, 1, 0, 3, 3), "transposes a 3 x 3 matrix but copies 8 elements"),
    ((0, 0, 8, 0, 1, 0, 0, 8), "transposes a 0 x 8"),
    ((0, 0, 8, 0, 1, 6), "no conversion"),
])
def test_malformed_plan_rows_are_refused_before_any_copy(tmp_path, row, message):
    path = tmp_path / "f.bin"
    path.write_bytes(bytes(100))
    with pytest.raises(CheckpointError, match=message):
        _run([core().File(str(path))], [row])


def test_concurrent_plans_with_different_thread_counts_share_the_pool(tmp_path):
    # Each call may rebuild the shared pool with its own size; that happens only between calls.
    path = tmp_path / "f.bin"
    path.write_bytes(bytes(i % 256 for i in range(1000)))
    file = core().File(str(path))
    results, errors = {}, []

    def load(threads: int) -> None:
        try:
            for _ in range(20):
                out = torch.zeros(1000, dtype=torch.uint8)
                table = array("q", [v for i in range(0, 1000, 10) for v in (0, i, 10, 0, out.data_ptr() + i, 0, 0, 0)])
                core().execute([file], table, 0, threads, 8, warm_fraction=constants.MAP_WARM_FRACTION)
                results.setdefault(threads, set()).add(out.numpy().tobytes())
        except Exception as err:  # reported below, in the test's thread
            errors.append(err)

    workers = [threading.Thread(target=load, args=(threads,)) for threads in (1, 2, 3, 4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert not errors
    assert all(found == {bytes(i % 256 for i in range(1000))} for found in results.values())


def test_missing_file_is_an_os_error_with_errno_and_path(tmp_path):
    path = str(tmp_path / "absent")
    with pytest.raises(EngineIOError) as caught:
        core().File(path)
    assert caught.value.errno == errno.ENOENT
    assert caught.value.path == path and path in str(caught.value) and caught.value.offset is None


def test_null_files_are_refused_not_dereferenced():
    # The engine once dereferenced a None file; a subprocess keeps the suite alive if that comes back.
    script = """
from array import array
from warpload import constants
from warpload.engine import core
from warpload.errors import CheckpointError
calls = {
    "execute": lambda: core().execute([None], array("q", [0, 0, 8, 0, 1, 0, 0, 0]), warm_fraction=constants.MAP_WARM_FRACTION),
    "prefault": lambda: core().prefault([None], [(0, 0, 8)]),
    "checksum": lambda: core().tf_bundle_first_bad_checksum([None], [(0, 0, 8, 0)]),
}
for name, call in calls.items():
    try:
        call()
    except CheckpointError as err:
        print(name, "refused:", err)
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "execute refused: plan row 0: file index 0 is null (None passed for a File)",
        "prefault refused: prefault range 0: file index 0 is null (None passed for a File)",
        "checksum refused: checksum job 0: file index 0 is null (None passed for a File)",
    ]


def test_file_read_is_bounds_checked(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(b"abcdef")
    handle = core().File(str(path))
    assert handle.read(2, 3) == b"cde"
    with pytest.raises(CheckpointError, match="cannot read 3 bytes at offset 4") as caught:
        handle.read(4, 3)
    assert (caught.value.path, caught.value.offset) == (str(path), 4)


def test_huge_page_buffer_is_zeroed_and_writable():
    buffer = core().HostBuffer(5 << 20)
    view = memoryview(buffer)
    assert len(view) == 5 << 20 and view[12345] == 0
    view[12345] = 7
    assert bytes(view[12344:12346]) == b"\x00\x07"


def test_file_that_shrinks_after_opening_gives_an_error_not_a_crash(tmp_path):
    # Copying from a mapping of a truncated file would raise SIGBUS; the pread path must say what happened.
    path = tmp_path / "m.safetensors"
    save_file({"a": torch.randn(1 << 20)}, path)
    script = f"""
import os, warpload
from warpload.errors import CheckpointError
os.environ["WARPLOAD_READ_METHOD"] = "pread"
import warpload.tensors as t
from warpload.formats.safetensors import read_header
from warpload.plan import plan_load
from warpload import engine
plan = plan_load(read_header({str(path)!r}).records)
files = engine.open_files(plan.paths)
os.truncate({str(path)!r}, 1000)
try:
    engine.execute(plan, files)
except CheckpointError as err:
    print("refused:", err, err.path == {str(path)!r}, err.offset >= 1000)
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "refused:" in result.stdout and "end of file" in result.stdout
    assert result.stdout.endswith("True True\n")  # the error keeps its file and byte offset
