"""save_file / save write what safetensors 0.8 writes, byte for byte, and refuse what it refuses with its classes."""
from __future__ import annotations

import errno
import json
import os
import resource
import signal
from array import array

import pytest
import safetensors.torch as st
import torch
from hypothesis import given, settings
from hypothesis import strategies

import warpload
from warpload._native import core
from warpload.engine import writer
from warpload.engine.shared_storage import find_shared_tensors
from warpload.errors import (
    EngineIOError,
    NoTensorDataError,
    NotAStringError,
    SharedTensorsError,
    UnsavableTensorError,
    UnsupportedDtypeError,
    WarploadError,
)

from conftest import SAVEABLE_DTYPES, random_tensor, same_bits

SHAPES = [(), (0,), (3, 0, 2), (1,), (7,), (3, 5), (2, 3, 4)]


def mixed_state() -> dict[str, torch.Tensor]:
    """Every dtype in several shapes (0-dim and empty ones too), inserted in no sorted order."""
    tensors = {}
    for i, dtype in enumerate(SAVEABLE_DTYPES):
        for j, shape in enumerate(SHAPES):
            tensors[f"{(i * 7 + j * 3) % 11}.{str(dtype)[6:]}.{j}"] = random_tensor(shape, dtype, seed=i * 10 + j)
    tensors["packed_f4"] = torch.randint(0, 256, (4, 3), dtype=torch.uint8).view(torch.float4_e2m1fn_x2)
    return tensors


@pytest.mark.parametrize("metadata", [None, {}, {"format": "pt"}, {"é\n\x01": "\"\\\u2028\x7f"}])
def test_save_is_byte_identical_to_safetensors(metadata):
    tensors = mixed_state()
    assert warpload.save(tensors, metadata=metadata) == st.save(tensors, metadata=metadata)


def test_save_file_is_byte_identical_to_safetensors(tmp_path):
    tensors = mixed_state()
    ours, theirs = tmp_path / "ours.safetensors", tmp_path / "theirs.safetensors"
    warpload.save_file(tensors, ours, metadata={"format": "pt"})
    st.save_file(tensors, theirs, metadata={"format": "pt"})
    assert ours.read_bytes() == theirs.read_bytes()
    assert sorted(os.listdir(tmp_path)) == ["ours.safetensors", "theirs.safetensors"]  # no temporary left


@pytest.mark.parametrize("names", [["b", "a", "é", "A", "a.10", "a.9", "\x01"], [], ["only"]])
def test_names_are_laid_out_as_safetensors_orders_them(names):
    tensors = {name: torch.full((2,), float(i)) for i, name in enumerate(names)}
    assert warpload.save(tensors) == st.save(tensors)


def test_several_metadata_keys_give_the_same_header_up_to_their_order():
    # safetensors writes metadata in its Rust HashMap's order, which changes from run to run.
    tensors, metadata = {"w": torch.ones(3)}, {f"key{i}": str(i) for i in range(5)}
    ours, theirs = warpload.save(tensors, metadata), st.save(tensors, metadata)
    assert len(ours) == len(theirs) and ours[-12:] == theirs[-12:]
    length = int.from_bytes(ours[:8], "little")
    assert json.loads(ours[8:8 + length]) == json.loads(theirs[8:8 + length])


NAMES = strategies.text(strategies.characters(blacklist_categories=("Cs",)), max_size=12)


@settings(max_examples=60, deadline=None)
@given(specs=strategies.dictionaries(
    NAMES, strategies.tuples(strategies.sampled_from(SAVEABLE_DTYPES),
                             strategies.lists(strategies.integers(0, 4), max_size=3)), max_size=6),
       metadata=strategies.one_of(strategies.none(), strategies.dictionaries(NAMES, NAMES, max_size=1)))
def test_any_names_dtypes_and_shapes_give_safetensors_bytes(specs, metadata):
    specs.pop("__metadata__", None)
    if not specs and metadata == {}:
        return  # safetensors writes invalid JSON there (test_no_tensors_and_empty_metadata_give_a_readable_file)
    tensors = {name: random_tensor(tuple(shape), dtype, seed=i)
               for i, (name, (dtype, shape)) in enumerate(specs.items())}
    assert warpload.save(tensors, metadata) == st.save(tensors, metadata)


def test_no_tensors_and_empty_metadata_give_a_readable_file():
    # safetensors 0.8 announces a map of 0 entries to serde_json, which closes it before writing __metadata__:
    # '{},"__metadata__":{}}', which no reader (safetensors included) loads. warpload writes the valid header.
    assert st.save({}, metadata={})[8:].startswith(b'{},"__metadata__"')
    data = warpload.save({}, metadata={})
    assert data[8:].rstrip() == b'{"__metadata__":{}}'
    assert warpload.load(data) == {} and st.load(data) == {}


def test_every_reader_loads_what_save_file_wrote(tmp_path):
    tensors = mixed_state()
    path = tmp_path / "m.safetensors"
    warpload.save_file(tensors, path, metadata={"k": "v"})
    for loaded in (st.load_file(path), warpload.load_file(path), warpload.load(path.read_bytes())):
        assert set(loaded) == set(tensors)
        assert all(same_bits(loaded[name], tensor) for name, tensor in tensors.items() if name != "packed_f4")
        assert same_bits(loaded["packed_f4"].view(torch.uint8), tensors["packed_f4"].view(torch.uint8))
    with st.safe_open(path, framework="pt") as handle:
        assert handle.metadata() == {"k": "v"}


def test_disjoint_slices_of_one_storage_are_saved_as_safetensors_saves_them():
    base = torch.arange(100, dtype=torch.float32).view(10, 10)
    tensors = {"tail": base[1:], "head": base[:1]}
    assert warpload.save(tensors) == st.save(tensors)


def test_save_file_replaces_an_existing_file_that_a_mapped_load_still_views(tmp_path):
    path = tmp_path / "m.safetensors"
    warpload.save_file({"w": torch.zeros(1000)}, path)
    views = warpload.load_file(path, zero_copy=True)
    warpload.save_file({"w": torch.ones(1000)}, path)
    assert torch.equal(views["w"], torch.zeros(1000))  # the old file, renamed over, is still what it viewed
    assert torch.equal(warpload.load_file(path)["w"], torch.ones(1000))


def refusals() -> dict[str, tuple]:
    """name -> (tensors, metadata, the warpload class, the built-in class safetensors raises)."""
    base = torch.arange(6.0).view(2, 3)
    return {
        "shared prefix": ({"A": base, "B": base[:1]}, None, SharedTensorsError, RuntimeError),
        "shared suffix": ({"A": base, "B": base[1:]}, None, SharedTensorsError, RuntimeError),
        "same tensor twice": ({"a": base, "b": base}, None, SharedTensorsError, RuntimeError),
        "non-contiguous": ({"t": base.t()}, None, UnsavableTensorError, ValueError),
        "sparse": ({"s": torch.sparse_coo_tensor(size=(2, 3))}, None, UnsavableTensorError, ValueError),
        "not a tensor": ({"d": {"some": "thing"}}, None, UnsavableTensorError, ValueError),
        "not a dict": ("notadict", None, UnsavableTensorError, ValueError),
        "meta tensor": ({"m": torch.zeros(3, device="meta")}, None, NoTensorDataError, RuntimeError),
        "int metadata value": ({"w": base}, {"k": 1}, NotAStringError, TypeError),
        "int metadata key": ({"w": base}, {1: "v"}, NotAStringError, TypeError),
        "metadata not a dict": ({"w": base}, "text", NotAStringError, TypeError),
        "int tensor name": ({1: base}, None, NotAStringError, TypeError),
    }


REFUSALS = ["shared prefix", "shared suffix", "same tensor twice", "non-contiguous", "sparse", "not a tensor",
            "not a dict", "meta tensor", "int metadata value", "int metadata key", "metadata not a dict",
            "int tensor name"]


@pytest.mark.filterwarnings("ignore:Sparse invariant checks")
@pytest.mark.parametrize("case", REFUSALS)
def test_refusals_raise_what_safetensors_raises(tmp_path, case):
    tensors, metadata, ours, builtin = refusals()[case]
    with pytest.raises(builtin) as theirs:
        st.save_file(tensors, tmp_path / "st.safetensors", metadata=metadata)
    path = tmp_path / "m.safetensors"
    path.write_bytes(b"kept")
    for call in (lambda: warpload.save_file(tensors, path, metadata=metadata),
                 lambda: warpload.save(tensors, metadata=metadata)):
        with pytest.raises(ours) as caught:
            call()
        assert isinstance(caught.value, (WarploadError, builtin))
    assert path.read_bytes() == b"kept" and sorted(os.listdir(tmp_path)) == ["m.safetensors"]
    if builtin is not TypeError:  # safetensors' TypeErrors are pyo3's argument messages; ours name the value
        assert str(theirs.value).split("http")[0].strip()[:60] in str(caught.value)


def test_shared_tensors_error_lists_the_groups():
    base = torch.zeros(4)
    with pytest.raises(SharedTensorsError) as caught:
        warpload.save({"a": base, "b": base[:2], "c": torch.ones(2)})
    assert caught.value.groups == [{"a", "b"}]


def state_dicts_with_sharing() -> list[dict[str, torch.Tensor]]:
    base = torch.arange(10.0)
    overlap = torch.empty([], dtype=base.dtype)
    overlap.set_(source=base.untyped_storage()[:16])
    return [
        {"a": base, "b": base[:5], "c": base[5:], "d": torch.ones(2)},
        {"m": base, "n": overlap},  # same address, other storage size: not shared (safetensors' own test)
        {"x": base[2:4], "y": base[3:6], "z": base[8:]},
        {"e": torch.empty(0), "meta": torch.zeros(2, device="meta"), "f": torch.zeros(0)},
    ]


@pytest.mark.parametrize("index", range(4))
def test_find_shared_tensors_matches_safetensors(index):
    state = state_dicts_with_sharing()[index]
    assert find_shared_tensors(state) == st._find_shared_tensors(state)


@pytest.mark.parametrize("method", [0, 1, 2])
def test_every_write_method_writes_the_same_bytes_across_chunk_edges(tmp_path, method):
    # Chunks of 4 KiB cut through the header and tensors of odd sizes: each method must still tile them.
    tensors = {f"t{i}": random_tensor((size,), torch.uint8, seed=i) for i, size in enumerate([1, 4095, 4097, 9000, 3])}
    layout, sources = writer.checked_layout(tensors, {"m": "x" * 5000})
    path = tmp_path / f"m{method}.safetensors"
    core().write_file(str(path), layout.header, writer.piece_table(layout, sources), layout.total_nbytes,
                      method=method, chunk_bytes=4096)
    assert path.read_bytes() == st.save(tensors, {"m": "x" * 5000})


@pytest.mark.parametrize("rows, total", [
    ([(0, 0, 15)], 16),             # an empty row inside the 16-byte header
    ([(1, 8, 20)], 28),             # a gap between the header and the row
    ([(1, 8, 10)], 18),             # a row that overlaps the header
    ([(1, 2**64 - 2, 16)], 2**64 - 1),  # a row whose end overflows
    ([(0, 8, 16)], 24),             # eight bytes from address 0
])
def test_core_refuses_rows_that_do_not_tile_the_output(tmp_path, rows, total):
    header = bytes(16)
    table = array("Q", [cell for row in rows for cell in row])
    with pytest.raises(ValueError):
        core().write_bytes(header, table, total)
    with pytest.raises(ValueError):
        core().write_file(str(tmp_path / "x"), header, table, total)


def test_a_failed_write_raises_an_os_error_and_leaves_no_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        warpload.save_file({"w": torch.ones(2)}, tmp_path / "missing-dir" / "m.safetensors")
    # A file-size limit makes the kernel refuse the write (EFBIG), as a full disk would (ENOSPC).
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, hard))
    try:
        with pytest.raises(EngineIOError) as caught:
            warpload.save_file({"w": torch.ones(10_000)}, tmp_path / "big.safetensors")
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)
    assert caught.value.errno == errno.EFBIG and os.path.dirname(caught.value.path) == str(tmp_path)
    assert os.listdir(tmp_path) == []


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU: GPU tensors are copied to the host "
                    "before the write")
def test_gpu_tensors_are_saved_from_a_host_copy():
    tensors = {"g": torch.arange(10.0, device="cuda"), "c": torch.ones(3)}
    assert warpload.save(tensors) == st.save(tensors)


def test_complex128_is_refused_as_safetensors_refuses_it(tmp_path):
    # warpload loads complex128 from .bin and TF files (C128), but safetensors has no name for it: a file holding
    # it would load nowhere, so save refuses it, as safetensors.torch does (with a KeyError of its own).
    tensors = {"z": torch.ones(2, dtype=torch.complex128)}
    with pytest.raises(KeyError):
        st.save(tensors)
    with pytest.raises(UnsupportedDtypeError, match="'z'.*torch.complex128 has no safetensors dtype"):
        warpload.save(tensors)
    with pytest.raises(UnsupportedDtypeError):
        warpload.save_file(tensors, tmp_path / "z.safetensors")
    assert not (tmp_path / "z.safetensors").exists()
