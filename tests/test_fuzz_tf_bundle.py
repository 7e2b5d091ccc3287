"""Property-based corruption of TF bundles: damaged .index and data files give typed warpload errors or exact data."""
from __future__ import annotations

import os
import shutil
import struct
from dataclasses import dataclass
from functools import cached_property

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import FIXTURES, same_bits
from tf_bundle_writer import footer_handles, masked_crc
from warpload import engine
from warpload.errors import WarploadError
from warpload.formats.tf_bundle import read_bundle_entries, read_string_tensor, read_tensor_bundle
from warpload.plan import plan_load

TF = FIXTURES / "tf"
FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@dataclass(frozen=True)
class Source:
    """A fixture bundle to damage: every dtype and a string tensor, or the TF2 GPT-2 object-based checkpoint."""

    folder: str
    prefix: str
    string: str  # the DT_STRING tensor read_string_tensor decodes

    @cached_property
    def index(self) -> bytes:
        return (TF / self.folder / f"{self.prefix}.index").read_bytes()

    @cached_property
    def data(self) -> bytes:
        return (TF / self.folder / f"{self.prefix}.data-00000-of-00001").read_bytes()

    @cached_property
    def spans(self) -> list[tuple[int, int]]:
        """(offset, size) of the data, metaindex and index blocks of the original (single data block) file."""
        meta_offset, meta_size, index_offset, index_size = footer_handles(self.index)
        return [(0, meta_offset - 5), (meta_offset, meta_size), (index_offset, index_size)]

    def reference(self) -> dict[str, torch.Tensor]:
        return engine.materialize(plan_load(read_tensor_bundle(TF / self.folder / self.prefix, skip_unsupported=True)))

    def write(self, tmp_path, index: bytes, data: bytes | None = None) -> str:
        """The damaged copy; an unchanged data file is linked, not copied."""
        folder = tmp_path / "fuzz"
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir()
        (folder / f"{self.prefix}.index").write_bytes(index)
        shard = folder / f"{self.prefix}.data-00000-of-00001"
        if data is None:
            shard.symlink_to(TF / self.folder / shard.name)
        else:
            shard.write_bytes(data)
        return os.fspath(folder / self.prefix)


DTYPES = Source("bundle_dtypes", "ckpt", "string")
SOURCES = st.sampled_from([DTYPES, Source("tf2_gpt2_checkpoint", "ckpt-1", "_CHECKPOINTABLE_OBJECT_GRAPH")])


def _exercise(prefix: str, source: Source) -> dict[str, torch.Tensor]:
    """Everything a loader does with a bundle; returns the loaded tensors."""
    read_bundle_entries(prefix)
    try:
        read_string_tensor(prefix, source.string)
    except KeyError:
        pass  # the damage renamed or hid the string tensor: a plain lookup miss
    records = read_tensor_bundle(prefix, verify_checksums=True, skip_unsupported=True)
    return engine.materialize(plan_load(records))


flips = st.lists(st.tuples(st.integers(0, 10**6), st.integers(1, 255)), min_size=1, max_size=4)


def _apply(blob: bytes, changes) -> bytearray:
    out = bytearray(blob)
    for position, mask in changes:
        out[position % len(out)] ^= mask
    return out


@FUZZ
@given(source=SOURCES, changes=flips, fix_crcs=st.booleans())
def test_damaged_index_gives_typed_errors(tmp_path, source, changes, fix_crcs):
    """With fix_crcs the block checksums are recomputed after the damage, so it reaches the block and proto
    parsers instead of stopping at the CRC check."""
    index = _apply(source.index, changes)
    if fix_crcs:
        for offset, size in source.spans:
            crc = masked_crc(bytes(index[offset:offset + size + 1]))
            index[offset + size + 1:offset + size + 5] = struct.pack("<I", crc)
    try:
        loaded = _exercise(source.write(tmp_path, bytes(index)), source)
    except WarploadError:
        return
    assert_consistent_with(loaded, source)


def assert_consistent_with(loaded: dict[str, torch.Tensor], source: Source) -> None:
    """A damaged index that still loads (the damage fell where no check can see it, or the CRCs were redone) gives
    bytes of the unchanged data file: a tensor the original also holds, with its dtype and shape, has its bits,
    and every other tensor's bytes are a span of the data file, never memory the loader did not read."""
    reference = source.reference()
    for name, tensor in loaded.items():
        original = reference.get(name)
        if original is not None and (original.dtype, original.shape) == (tensor.dtype, tensor.shape):
            assert same_bits(tensor, original), name
        else:
            raw = tensor.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
            assert raw in source.data, name


@FUZZ
@given(source=SOURCES, cut=st.integers(0, 10**6), which=st.sampled_from(["index", "data"]))
def test_truncated_files_give_typed_errors(tmp_path, source, cut, which):
    index = source.index[:cut % len(source.index)] if which == "index" else source.index
    data = source.data[:cut % len(source.data)] if which == "data" else None
    with pytest.raises(WarploadError):
        _exercise(source.write(tmp_path, index, data), source)


@FUZZ
@given(changes=flips)
def test_damaged_data_is_caught_by_checksums_or_untouched(tmp_path, changes):
    """Every numeric tensor's bytes are covered by its crc32c: a load with verify_checksums either fails
    with a typed error or returns exactly the original tensors (the damage hit only the string tensor,
    whose own CRCs read_string_tensor checks)."""
    try:
        loaded = _exercise(DTYPES.write(tmp_path, DTYPES.index, bytes(_apply(DTYPES.data, changes))), DTYPES)
    except WarploadError:
        return
    reference = DTYPES.reference()
    assert set(loaded) == set(reference)
    for name, tensor in reference.items():
        assert same_bits(loaded[name], tensor), name
