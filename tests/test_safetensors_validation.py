"""Corrupt safetensors headers give a HeaderError naming file, tensor and offset (where safetensors refuses too)."""
from __future__ import annotations

import struct

import pytest
import safetensors
import torch
from safetensors.torch import load_file as st_load_file

import warpload
from warpload.errors import CheckpointError, HeaderError


def entry(dtype="F32", shape=(2,), begin=0, end=8):
    return {"dtype": dtype, "shape": list(shape), "data_offsets": [begin, end]}


# (case id, header, data, fragment the message must contain, tensor named in the error)
BAD_HEADERS = [
    ("gap", {"a": entry(), "b": entry(begin=12, end=20)}, bytes(20), "gap", "b"),
    ("overlap", {"a": entry(), "b": entry(begin=4, end=12)}, bytes(12), "overlaps", "b"),
    ("first-not-zero", {"a": entry(begin=4, end=12)}, bytes(12), "expected 0", "a"),
    ("size-mismatch", {"a": entry(shape=(3,))}, bytes(8), "needs 12 bytes", "a"),
    ("end-before-begin", {"a": entry(begin=0, end=0), "b": entry(shape=(0,), begin=8, end=4)}, bytes(8), None, None),
    ("trailing-bytes", {"a": entry()}, bytes(12), "trailing", None),
    ("truncated-data", {"a": entry(shape=(4,), end=16)}, bytes(8), "truncated", None),
    ("unknown-dtype", {"a": entry(dtype="F128")}, bytes(8), "unknown dtype", "a"),
    ("negative-shape", {"a": entry(shape=(-2,))}, bytes(8), "non-negative", "a"),
    ("float-shape", {"a": entry(shape=(2.0,))}, bytes(8), "non-negative", "a"),
    ("bool-offsets", {"a": {"dtype": "F32", "shape": [2], "data_offsets": [False, 8]}}, bytes(8), "data_offsets", "a"),
    ("three-offsets", {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8, 8]}}, bytes(8), "data_offsets", "a"),
    ("missing-dtype", {"a": {"shape": [2], "data_offsets": [0, 8]}}, bytes(8), "dtype", "a"),
    ("entry-not-object", {"a": [1, 2]}, bytes(0), "object", "a"),
    ("metadata-int", {"__metadata__": {"x": 1}, "a": entry()}, bytes(8), "__metadata__", None),
    ("sub-byte", {"a": entry(dtype="F4", shape=(3,), end=1)}, bytes(1), "whole bytes", "a"),
    ("shape-overflow", {"a": entry(shape=(2**40, 2**40))}, bytes(8), "overflow", "a"),
]


@pytest.mark.parametrize("case,header,data,message,tensor", BAD_HEADERS, ids=[c[0] for c in BAD_HEADERS])
def test_invalid_header_is_refused_like_safetensors(write_raw, case, header, data, message, tensor):
    path = write_raw(header, data)
    with pytest.raises(safetensors.SafetensorError):
        st_load_file(path)
    with pytest.raises(HeaderError, match=message) as caught:
        warpload.load_file(path)
    assert caught.value.path == path and path in str(caught.value)
    assert caught.value.offset is not None
    if tensor is not None:
        assert caught.value.tensor == tensor


@pytest.mark.parametrize("blob,message", [
    (b"", "too small"),
    (b"\x01\x02\x03", "too small"),
    (struct.pack("<Q", 100_000_001) + b"{}", "exceeds"),
    (struct.pack("<Q", 2**64 - 1) + b"{}", "exceeds"),
    (struct.pack("<Q", 50) + b"{}", "runs past the end"),
    (struct.pack("<Q", 2) + b"\xff\xfe", "UTF-8"),
    (struct.pack("<Q", 4) + b"{'a'", "JSON"),
    (struct.pack("<Q", 2) + b"[]", "expected an object"),
])
def test_broken_length_prefix_or_json_is_refused(tmp_path, blob, message):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(blob)
    with pytest.raises(safetensors.SafetensorError):
        st_load_file(path)
    with pytest.raises(HeaderError, match=message):
        warpload.load_file(path)
    with pytest.raises(ValueError):
        warpload.load_file(path)


def test_duplicate_tensor_names_are_refused_although_safetensors_keeps_the_last(tmp_path):
    text = b'{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}'
    path = tmp_path / "dup.safetensors"
    path.write_bytes(struct.pack("<Q", len(text)) + text + b"\x07")
    with pytest.raises(HeaderError, match="duplicate"):
        warpload.load_file(path)


def test_leading_and_trailing_whitespace_in_the_header_is_accepted_like_safetensors(tmp_path):
    text = b'  \n{"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}}   '
    path = tmp_path / "ws.safetensors"
    path.write_bytes(struct.pack("<Q", len(text)) + text + b"\x07\x08")
    assert torch.equal(warpload.load_file(path)["a"], st_load_file(path)["a"])


def test_unordered_json_entries_are_accepted(write_raw):
    path = write_raw({"b": entry(begin=8, end=16), "a": entry()}, bytes(range(16)))
    expected = st_load_file(path)
    loaded = warpload.load_file(path)
    assert list(loaded) == list(expected) == ["a", "b"]


def test_header_errors_are_checkpoint_errors(write_raw):
    path = write_raw({"a": entry(shape=(3,))}, bytes(8))
    with pytest.raises(CheckpointError):
        warpload.load_file(path)
