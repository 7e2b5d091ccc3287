"""The C++ engine through warpload._core: read methods, thread counts, chunking, and typed errors for bad plans."""
from __future__ import annotations

import ast
import errno
import importlib.resources
import subprocess
import sys
import threading
from array import array

import numpy as np
import pytest
import torch
from safetensors.torch import load_file as st_load_file
from safetensors.torch import save_file

import warpload
from conftest import assert_same_state
from warpload import constants, engine
from warpload._native import core
from warpload.errors import CheckpointError, DestinationError, EngineIOError
from warpload.formats.safetensors import read_header
from warpload.plan import plan_load


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


def _run(files, rows, regions=None, **options):
    """Runs plan rows (file, src offset, src bytes, src dtype, region, dst offset, dst dtype[, rows, cols, swap]) into
    regions (default: one 4 KiB bytearray); returns the engine's counters."""
    table = array("q", [value for row in rows for value in (tuple(row) + (0, 0, 0))[:10]])
    return core().execute(files, table, [bytearray(4096)] if regions is None else regions,
                          warm_fraction=constants.MAP_WARM_FRACTION, coalesce_gap=constants.MIRRORED_GAP_MAX_BYTES,
                          **options)


@pytest.fixture
def data_file(tmp_path):
    """A 1000-byte file of the bytes 0..255 repeated, opened."""
    path = tmp_path / "f.bin"
    path.write_bytes(bytes(i % 256 for i in range(1000)))
    return core().File(str(path))


def test_plan_reading_past_the_end_names_the_file_and_range(data_file):
    with pytest.raises(CheckpointError, match=r"f\.bin.*\[950, 950\+64\).*1000 bytes") as caught:
        _run([data_file], [(0, 950, 64, 0, 0, 0, 0)])
    assert caught.value.path == data_file.path and caught.value.offset == 950


def test_plan_with_offset_overflow_is_refused(data_file):
    with pytest.raises(CheckpointError, match="past the end"):
        _run([data_file], [(0, 2**63 - 4, 8, 0, 0, 0, 0)])


@pytest.mark.parametrize("row,message", [
    ((1, 0, 8, 0, 0, 0, 0), "file index 1, but there are 1 files"),
    ((0, 0, 3, 2, 0, 0, 2), "whole number of elements"),
    ((0, 0, 8, 10, 0, 0, 0), "unknown dtype"),
    ((0, -1, 8, 0, 0, 0, 0), "negative"),
    ((0, 0, 8, 0, 0, -1, 0), "negative"),
    ((0, 0, 8, 0, -1, 0, 0), "negative"),
    ((2**32, 0, 8, 0, 0, 0, 0), "index too large"),
    ((0, 0, 8, 0, 0, 0, 0, 3, 3), "transposes a 3 x 3 matrix but copies 8 elements"),
    ((0, 0, 8, 0, 0, 0, 0, 0, 8), "transposes a 0 x 8"),
    ((0, 0, 8, 0, 0, 0, 6), "no conversion"),
    ((0, 0, 8, 8, 0, 0, 8, 0, 0, 3), "byte-swaps units of 3 bytes"),
    ((0, 0, 8, 7, 0, 0, 7, 0, 0, 4), "byte-swaps units of 4 bytes in elements of 2"),
    ((0, 0, 8, 0, 0, 0, 0, 0, 0, 16), "byte-swap width too large"),
    ((0, 0, 8, 0, 0, 0, 0, 0, 0, -2), "negative"),
])
def test_malformed_plan_rows_are_refused_before_any_copy(data_file, row, message):
    region = bytearray(b"\x5a" * 64)
    with pytest.raises(CheckpointError, match=message):
        _run([data_file], [(0, 0, 8, 0, 0, 8, 0), row], [region])
    assert region == b"\x5a" * 64


def test_missing_file_is_an_os_error_with_errno_and_path(tmp_path):
    path = str(tmp_path / "absent")
    with pytest.raises(EngineIOError) as caught:
        core().File(path)
    assert caught.value.errno == errno.ENOENT
    assert caught.value.path == path and path in str(caught.value) and caught.value.offset is None


def test_file_read_is_bounds_checked(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(b"abcdef")
    handle = core().File(str(path))
    assert handle.read(2, 3) == b"cde"
    with pytest.raises(CheckpointError, match="cannot read 3 bytes at offset 4") as caught:
        handle.read(4, 3)
    assert (caught.value.path, caught.value.offset) == (str(path), 4)


# Destination regions of every kind the engine takes, 64 bytes each, filled with a sentinel; each
# keeps its memory alive while the test runs.
def _region_kinds():
    def torch_pair():
        tensor = torch.full((64,), 0x5A, dtype=torch.uint8)
        return (tensor.data_ptr(), tensor.numel()), tensor

    def host_buffer():
        buffer = core().HostBuffer(64)
        memoryview(buffer)[:] = b"\x5a" * 64
        return buffer, memoryview(buffer)

    def numpy_array():
        array_ = np.full(64, 0x5A, dtype=np.uint8)
        return array_, array_

    def byte_array():
        region = bytearray(b"\x5a" * 64)
        return region, region

    return {"bytearray": byte_array, "numpy": numpy_array, "host_buffer": host_buffer, "torch_pair": torch_pair}


def _bytes_of(owner) -> bytes:
    return owner.numpy().tobytes() if isinstance(owner, torch.Tensor) else bytes(owner)


@pytest.mark.parametrize("kind", list(_region_kinds()))
def test_every_region_kind_receives_its_bytes(data_file, kind):
    region, owner = _region_kinds()[kind]()
    stats = _run([data_file], [(0, 100, 64, 0, 0, 0, 0)], [region])
    assert _bytes_of(owner) == bytes(i % 256 for i in range(100, 164))
    assert stats == {"copies": 1, "bytes": 64}


# Rows that would write outside a 64-byte region (F8_E4M3 is dtype code 5, F64 code 1, Raw32 code 8),
# the message they give, and the nbytes they report.
OUT_OF_BOUNDS = {
    "one_byte_too_many": ((0, 0, 65, 0, 0, 0, 0), "would write 65 bytes at offset 0 of destination region 0, "
                                                  "which has 64 bytes", 65),
    "ends_one_byte_past": ((0, 0, 8, 0, 0, 57, 0), "would write 8 bytes at offset 57", 8),
    "offset_past_the_end": ((0, 0, 8, 0, 0, 72, 0), "at offset 72", 8),
    "empty_row_past_the_end": ((0, 0, 0, 0, 0, 65, 0), "would write 0 bytes at offset 65", 0),
    "offset_overflows_int64": ((0, 0, 8, 0, 0, 2**63 - 1, 0), f"at offset {2**63 - 1}", 8),
    "conversion_widens_past_the_end": ((0, 0, 9, 5, 0, 0, 1), "would write 72 bytes", 72),
    "transpose_past_the_end": ((0, 0, 68, 8, 0, 0, 8, 17, 1), "would write 68 bytes", 68),
}


@pytest.mark.parametrize("kind", list(_region_kinds()))
@pytest.mark.parametrize("case", list(OUT_OF_BOUNDS))
def test_rows_writing_outside_their_region_are_refused_and_nothing_is_written(data_file, kind, case):
    row, message, nbytes = OUT_OF_BOUNDS[case]
    region, owner = _region_kinds()[kind]()
    spare = bytearray(b"\x5a" * 64)
    # A valid row first: the engine checks every row before it copies any.
    with pytest.raises(DestinationError, match=message) as caught:
        _run([data_file], [(0, 0, 64, 0, 1, 0, 0), row], [region, spare])
    error = caught.value
    assert isinstance(error, ValueError)
    assert (error.row, error.region, error.nbytes, error.region_size) == (1, 0, nbytes, 64)
    assert error.offset == row[5] and error.path == data_file.path and data_file.path in str(error)
    assert _bytes_of(owner) == b"\x5a" * 64 and spare == b"\x5a" * 64


def test_row_naming_a_region_that_does_not_exist_is_refused(data_file):
    with pytest.raises(DestinationError, match="destination region 1, but the plan has 1 regions"):
        _run([data_file], [(0, 0, 8, 0, 1, 0, 0)])


@pytest.mark.parametrize("region,message", [
    (b"\x00" * 64, "destination region 0 is not a writable, C-contiguous buffer"),
    (np.zeros((8, 8), dtype=np.uint8)[:, ::2], "destination region 0 is not a writable, C-contiguous buffer"),
    (object(), "destination region 0 is not a writable"),
])
def test_read_only_strided_or_unbuffered_regions_are_type_errors(data_file, region, message):
    with pytest.raises(TypeError, match=message):
        _run([data_file], [(0, 0, 8, 0, 0, 0, 0)], [region])


@pytest.mark.parametrize("pair", [(0, 64), (2**64 - 8, 16)])
def test_address_pairs_that_are_no_memory_range_are_refused(data_file, pair):
    with pytest.raises(ValueError, match="is not a range of memory"):
        _run([data_file], [(0, 0, 8, 0, 0, 0, 0)], [pair])


def test_a_region_cannot_be_resized_while_the_engine_writes_it(tmp_path):
    # The engine holds the bytearray's buffer for the whole call (with the GIL released): a resize from
    # another thread would move the memory under the copy, so Python must refuse it until the call ends.
    path = tmp_path / "big.bin"
    path.write_bytes(bytes(64 << 20))
    region = bytearray(64 << 20)
    file = core().File(str(path))
    worker = threading.Thread(target=_run, args=([file], [(0, 0, 64 << 20, 0, 0, 0, 0)], [region]),
                              kwargs={"num_threads": 1, "method": constants.READ_METHODS["pread"]})
    refused = 0
    worker.start()
    while worker.is_alive():
        try:
            region.append(0)
            del region[-1]
        except BufferError:
            refused += 1
    worker.join()
    assert refused > 0
    region.append(0)  # released once the call returned


def test_plan_too_large_for_its_buffer_names_the_tensor(tmp_path):
    path = tmp_path / "m.safetensors"
    save_file({"a": torch.ones(4), "wte": torch.ones(16)}, path)
    plan = plan_load(read_header(str(path)).records)
    region = bytearray(b"\x5a" * (plan.total_nbytes - 1))
    with pytest.raises(DestinationError, match="tensor 'wte': .* which has 127 bytes") as caught:
        engine.run_table(plan, [region], [(0, s.dst_offset) for s in plan.storages])
    assert caught.value.tensor == "wte" and caught.value.row == 1
    assert region == b"\x5a" * (plan.total_nbytes - 1)


def test_null_files_are_refused_not_dereferenced():
    # The engine once dereferenced a None file; a subprocess keeps the suite alive if that comes back.
    script = """
from array import array
from warpload import constants
from warpload._native import core
from warpload.errors import CheckpointError
calls = {
    "execute": lambda: core().execute([None], array("q", [0, 0, 8, 0, 0, 0, 0, 0, 0, 0]), [bytearray(8)],
                                      warm_fraction=constants.MAP_WARM_FRACTION, coalesce_gap=0),
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


@pytest.mark.parametrize("padded, copies", [([], 3), ([0], 1)])
def test_gaps_are_copied_over_only_in_padded_regions(data_file, padded, copies):
    # Rows 16 bytes apart both in the file and in memory: one copy spans the gaps only where the region's
    # gaps are padding; back-to-back rows merge anywhere; a conversion never copies a gap.
    region = bytearray(b"\x5a" * 256)
    rows = [(0, 0, 16, 0, 0, 0, 0), (0, 32, 16, 0, 0, 32, 0), (0, 48, 16, 0, 0, 48, 0), (0, 80, 16, 0, 0, 80, 0)]
    stats = _run([data_file], rows, [region], padded=padded)
    assert stats["copies"] == copies
    expected = bytearray(b"\x5a" * 256)
    span = range(96) if padded else [*range(16), *range(32, 64), *range(80, 96)]
    for i in span:
        expected[i] = i
    assert region == expected


def test_concurrent_plans_with_different_thread_counts_share_the_pool(data_file):
    # Each call may rebuild the shared pool with its own size; that happens only between calls.
    results, errors = {}, []

    def load(threads: int) -> None:
        try:
            for _ in range(20):
                region = bytearray(1000)
                rows = [(0, i, 10, 0, 0, i, 0) for i in range(0, 1000, 10)]
                _run([data_file], rows, [region], num_threads=threads, chunk_bytes=8)
                results.setdefault(threads, set()).add(bytes(region))
        except Exception as err:  # reported below, in the test's thread
            errors.append(err)

    workers = [threading.Thread(target=load, args=(threads,)) for threads in (1, 2, 3, 4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert not errors
    assert all(found == {bytes(i % 256 for i in range(1000))} for found in results.values())


def test_core_stub_declares_every_binding_with_a_docstring():
    stub = importlib.resources.files("warpload").joinpath("_core.pyi")
    assert stub.is_file(), "warpload/_core.pyi is not installed with the package"
    tree = ast.parse(stub.read_text())
    declared = {node.name: node for node in tree.body if isinstance(node, (ast.FunctionDef, ast.ClassDef))}
    public = {name for name in dir(core()) if not name.startswith("_")}
    assert set(declared) == public
    for name, node in declared.items():
        members = [node] + [child for child in getattr(node, "body", []) if isinstance(child, ast.FunctionDef)]
        assert all(ast.get_docstring(member) for member in members), name
    for name in ("File", "HostBuffer", "Progress"):
        methods = {child.name for child in declared[name].body if isinstance(child, ast.FunctionDef)}
        assert {m for m in dir(getattr(core(), name)) if not m.startswith("_")} <= methods, name


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


@pytest.mark.parametrize("width, source, target", [
    (2, 7, 7), (4, 8, 8), (8, 9, 9),  # raw copies of 2-, 4- and 8-byte elements
    (4, 9, 9),  # complex64: each float component reversed, as torch's storage.byteswap does
    (4, 2, 4), (2, 3, 2), (8, 1, 3),  # F32 -> BF16, F16 -> F32, F64 -> F16: swapped first, then converted
])
@pytest.mark.parametrize("threads", ["1", "2"])
def test_byte_swapped_copies_match_numpy_byteswap_then_torch(tmp_path, monkeypatch, width, source, target, threads):
    import torch

    codes = {1: torch.float64, 2: torch.float32, 3: torch.float16, 4: torch.bfloat16, 7: torch.int16,
             8: torch.int32, 9: torch.int64}
    little = torch.randn(3000).to(codes[source]) if codes[source].is_floating_point else \
        torch.randint(-1000, 1000, (3000,), dtype=codes[source])
    raw = little.view(torch.uint8).numpy()
    big = raw.view(f"u{width}").byteswap().tobytes()  # numpy's byteswap: what a big-endian machine wrote
    path = tmp_path / "be.bin"
    path.write_bytes(b"\0" * 3 + big)  # an odd offset: zip records need not be aligned
    expected = little.to(codes[target])
    region = bytearray(expected.numel() * expected.element_size())
    monkeypatch.setenv("WARPLOAD_NUM_THREADS", threads)
    _run([core().File(str(path))], [(0, 3, len(big), source, 0, 0, target, 0, 0, width)], [region],
         chunk_bytes=1024, num_threads=int(threads))
    assert bytes(region) == expected.view(torch.uint8).numpy().tobytes()
