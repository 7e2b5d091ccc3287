"""Code written against safetensors keeps working: its error class, its closed-handle rule, OS-style missing files."""
from __future__ import annotations

import errno
import os

import pytest
import safetensors
import torch
from safetensors.torch import load_file as st_load_file
from safetensors.torch import save_file

import warpload
from warpload.errors import ClosedFileError, HeaderError, WarploadError

from conftest import write_safetensors

BAD_HEADERS = {
    "not json": (b"{nope", None),
    "a json list": (b"[1, 2]  ", None),
    "unknown dtype": (None, {"w": {"dtype": "X9", "shape": [1], "data_offsets": [0, 4]}}),
    "past the end": (None, {"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}),
}


def bad_file(tmp_path, kind: str) -> str:
    raw, header = BAD_HEADERS[kind]
    path = tmp_path / "bad.safetensors"
    if raw is not None:
        path.write_bytes(len(raw).to_bytes(8, "little") + raw)
        return os.fspath(path)
    return write_safetensors(path, header, b"\0" * 4)


@pytest.mark.parametrize("kind", BAD_HEADERS)
def test_header_errors_are_safetensor_errors_where_safetensors_raises_one(tmp_path, kind):
    path = bad_file(tmp_path, kind)
    with pytest.raises(safetensors.SafetensorError):
        st_load_file(path)
    with pytest.raises(safetensors.SafetensorError) as caught:
        warpload.load_file(path)
    assert isinstance(caught.value, HeaderError) and isinstance(caught.value, ValueError)
    with pytest.raises(safetensors.SafetensorError):
        warpload.safe_open(path, "pt")


@pytest.mark.parametrize("call", [lambda f: f.keys(), lambda f: f.offset_keys(), lambda f: f.metadata(),
                                  lambda f: f.get_tensor("a"), lambda f: f.get_slice("a")],
                         ids=["keys", "offset_keys", "metadata", "get_tensor", "get_slice"])
def test_a_closed_handle_refuses_every_call_as_safetensors_does(tmp_path, call):
    path = os.fspath(tmp_path / "x.safetensors")
    save_file({"a": torch.arange(6.0)}, path)
    with safetensors.safe_open(path, "pt") as theirs:
        their_slice = theirs.get_slice("a")
    with warpload.safe_open(path, "pt") as ours:
        our_slice = ours.get_slice("a")
    with pytest.raises(safetensors.SafetensorError, match="File is closed"):
        call(theirs)
    with pytest.raises(safetensors.SafetensorError, match="File is closed") as caught:
        call(ours)
    assert isinstance(caught.value, (ClosedFileError, WarploadError))
    # A slice taken while the file was open keeps reading, in both.
    assert torch.equal(our_slice[1:3], their_slice[1:3])


@pytest.mark.parametrize("load", [warpload.load_file, lambda p: warpload.safe_open(p, "pt"), warpload.load_checkpoint],
                         ids=["load_file", "safe_open", "load_checkpoint"])
def test_a_missing_file_reads_like_the_os_error(tmp_path, load):
    path = os.fspath(tmp_path / "missing.safetensors")
    with pytest.raises(FileNotFoundError) as caught:
        load(path)
    error = caught.value
    assert (error.errno, error.strerror, error.filename) == (errno.ENOENT, os.strerror(errno.ENOENT), path)
    assert str(error) == str(FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), path))
    assert isinstance(error, warpload.errors.CheckpointNotFoundError)
