"""Property-based tests: random tensors round-trip; random corruption never crashes or returns a wrong tensor."""
from __future__ import annotations

import struct

import pytest
import safetensors
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file as st_load_file
from safetensors.torch import save, save_file

import warpload
from conftest import SAVEABLE_DTYPES, random_tensor, same_bits
from warpload.errors import CheckpointError

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

shapes = st.lists(st.integers(0, 9), min_size=0, max_size=4).map(tuple)
tensor_specs = st.dictionaries(
    st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=12).filter(
        lambda name: name != "__metadata__"),
    st.tuples(shapes, st.sampled_from(SAVEABLE_DTYPES), st.integers(0, 2**16)),
    max_size=6,
)


@FUZZ
@given(specs=tensor_specs, zero_copy=st.booleans())
def test_random_tensors_round_trip(tmp_path, specs, zero_copy):
    tensors = {name: random_tensor(shape, dtype, seed) for name, (shape, dtype, seed) in specs.items()}
    path = tmp_path / "rt.safetensors"
    save_file(tensors, path)
    loaded = warpload.load_file(path, zero_copy=zero_copy)
    assert set(loaded) == set(tensors)
    for name, tensor in tensors.items():
        assert same_bits(loaded[name], tensor), name


def _reference(path):
    """safetensors' verdict on a file: its tensors, or None when it refuses the file."""
    try:
        return st_load_file(path)
    except (safetensors.SafetensorError, RuntimeError, ValueError, TypeError):
        return None


def _check_against_reference(path):
    """warpload either refuses with CheckpointError, or returns exactly what safetensors returns."""
    expected = _reference(path)
    try:
        loaded = warpload.load_file(path)
    except CheckpointError:
        return
    except warpload.errors.UnsupportedDtypeError:
        return
    assert expected is not None, "warpload accepted a file safetensors refuses"
    assert set(loaded) == set(expected)
    for name in expected:
        assert same_bits(loaded[name], expected[name]), name


SAMPLE = save({
    "weight": torch.randn(6, 5),
    "bias": torch.arange(5, dtype=torch.int16),
    "half": torch.randn(3, dtype=torch.bfloat16),
}, metadata={"format": "pt"})


@FUZZ
@given(cut=st.integers(0, len(SAMPLE) - 1))
def test_truncated_file_is_refused(tmp_path, cut):
    path = tmp_path / "t.safetensors"
    path.write_bytes(SAMPLE[:cut])
    with pytest.raises(CheckpointError):
        warpload.load_file(path)


@FUZZ
@given(flips=st.lists(st.tuples(st.integers(0, len(SAMPLE) - 1), st.integers(1, 255)), min_size=1, max_size=4))
def test_flipped_bytes_give_an_error_or_the_reference_result(tmp_path, flips):
    blob = bytearray(SAMPLE)
    for position, mask in flips:
        blob[position] ^= mask
    path = tmp_path / "f.safetensors"
    path.write_bytes(bytes(blob))
    _check_against_reference(path)


@FUZZ
@given(header_len=st.one_of(st.integers(0, 2**64 - 1), st.integers(0, 400)))
def test_any_header_length_is_handled(tmp_path, header_len):
    path = tmp_path / "h.safetensors"
    path.write_bytes(struct.pack("<Q", header_len) + SAMPLE[8:])
    _check_against_reference(path)


@FUZZ
@given(begin=st.integers(0, 2**64 - 1), end=st.integers(0, 2**64 - 1),
       dim=st.integers(0, 2**64 - 1), dtype=st.sampled_from(["F32", "U8", "F64", "BOOL", "F4"]))
def test_hostile_offsets_and_shapes_are_refused_or_exact(write_raw, begin, end, dim, dtype):
    header = {"x": {"dtype": dtype, "shape": [dim], "data_offsets": [begin, end]}}
    path = write_raw(header, bytes(range(64)))
    _check_against_reference(path)
