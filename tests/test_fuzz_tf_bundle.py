"""Property-based corruption of TF bundles: damaged .index and data files give typed warpload errors or exact data."""
from __future__ import annotations

import os
import shutil
import struct

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from warpload import engine
from warpload.errors import WarploadError
from warpload.formats.tf_bundle import read_bundle_entries, read_string_tensor, read_tensor_bundle
from warpload.plan import plan_load

from conftest import FIXTURES, same_bits
from tf_bundle_writer import footer_handles, masked_crc

SOURCE = FIXTURES / "tf" / "bundle_dtypes"
pytestmark = pytest.mark.skipif(not SOURCE.is_dir(), reason=f"TF fixtures not found at {SOURCE}")
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _read(path) -> bytes:
    with open(path, "rb") as handle:
        return handle.read()


INDEX = _read(SOURCE / "ckpt.index") if SOURCE.is_dir() else b""
DATA = _read(SOURCE / "ckpt.data-00000-of-00001") if SOURCE.is_dir() else b""


def _block_spans(index: bytes) -> list[tuple[int, int]]:
    """(offset, size) of the data, metaindex and index blocks of the original (single data block) file."""
    meta_offset, meta_size, index_offset, index_size = footer_handles(index)
    return [(0, meta_offset - 5), (meta_offset, meta_size), (index_offset, index_size)]


SPANS = _block_spans(INDEX) if SOURCE.is_dir() else []


def _reference() -> dict[str, torch.Tensor]:
    return engine.materialize(plan_load(read_tensor_bundle(SOURCE / "ckpt", skip_unsupported=True)))


def _exercise(prefix: str) -> dict[str, torch.Tensor]:
    """Everything a loader does with a bundle; returns the loaded tensors."""
    read_bundle_entries(prefix)
    try:
        read_string_tensor(prefix, "string")
    except KeyError:
        pass  # the damage renamed or hid the string tensor: a plain lookup miss
    records = read_tensor_bundle(prefix, verify_checksums=True, skip_unsupported=True)
    return engine.materialize(plan_load(records))


def _write(tmp_path, index: bytes, data: bytes) -> str:
    folder = tmp_path / "fuzz"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    (folder / "ckpt.index").write_bytes(index)
    (folder / "ckpt.data-00000-of-00001").write_bytes(data)
    return os.fspath(folder / "ckpt")


flips = st.lists(st.tuples(st.integers(0, 10**6), st.integers(1, 255)), min_size=1, max_size=4)


def _apply(blob: bytes, changes) -> bytearray:
    out = bytearray(blob)
    for position, mask in changes:
        out[position % len(out)] ^= mask
    return out


@FUZZ
@given(changes=flips, fix_crcs=st.booleans())
def test_damaged_index_gives_typed_errors(tmp_path, changes, fix_crcs):
    """With fix_crcs the block checksums are recomputed after the damage, so it reaches the block and proto
    parsers instead of stopping at the CRC check."""
    index = _apply(INDEX, changes)
    if fix_crcs:
        for offset, size in SPANS:
            crc = masked_crc(bytes(index[offset:offset + size + 1]))
            index[offset + size + 1:offset + size + 5] = struct.pack("<I", crc)
    try:
        _exercise(_write(tmp_path, bytes(index), DATA))
    except WarploadError:
        pass


@FUZZ
@given(cut=st.integers(0, 10**6), which=st.sampled_from(["index", "data"]))
def test_truncated_files_give_typed_errors(tmp_path, cut, which):
    index = INDEX[:cut % len(INDEX)] if which == "index" else INDEX
    data = DATA[:cut % len(DATA)] if which == "data" else DATA
    with pytest.raises(WarploadError):
        _exercise(_write(tmp_path, index, data))


@FUZZ
@given(changes=flips)
def test_damaged_data_is_caught_by_checksums_or_untouched(tmp_path, changes):
    """Every numeric tensor's bytes are covered by its crc32c: a load with verify_checksums either fails
    with a typed error or returns exactly the original tensors (the damage hit only the string tensor,
    whose own CRCs read_string_tensor checks)."""
    try:
        loaded = _exercise(_write(tmp_path, INDEX, bytes(_apply(DATA, changes))))
    except WarploadError:
        return
    reference = _reference()
    assert set(loaded) == set(reference)
    for name, tensor in reference.items():
        assert same_bits(loaded[name], tensor), name
