"""Code written against safetensors keeps working: its error class, its closed-handle rule, OS-style missing files,
and load(bytes)."""
from __future__ import annotations

import errno
import os

import pytest
import safetensors
import torch
from safetensors.torch import load as st_load
from safetensors.torch import load_file as st_load_file
from safetensors.torch import save as st_save
from safetensors.torch import save_file

import warpload
from warpload.errors import ClosedFileError, HeaderError, WarploadError

from conftest import SAVEABLE_DTYPES, assert_same_state, random_tensor, same_bits, write_safetensors

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


@pytest.mark.parametrize("dtype", SAVEABLE_DTYPES, ids=str)
def test_load_of_bytes_equals_safetensors_on_the_same_bytes(tmp_path, dtype):
    """The oracle is safetensors.torch.load_file on the bytes written out: its load(bytes) lacks some dtypes
    (F8_E8M0 raises KeyError in safetensors 0.8) and returns its own hash order, where warpload keeps the file's."""
    tensors = {"big": random_tensor((33, 7), dtype, seed=1), "empty": random_tensor((0, 3), dtype),
               "scalar": random_tensor((), dtype, seed=2), "row": random_tensor((5,), dtype, seed=3)}
    data = st_save(tensors, metadata={"format": "pt"})
    path = tmp_path / "same.safetensors"
    path.write_bytes(data)
    assert_same_state(warpload.load(data), st_load_file(os.fspath(path)))


def test_load_accepts_unpadded_headers_and_owns_its_copy():
    header = b'{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}'  # 55 bytes: the data starts unaligned
    data = len(header).to_bytes(8, "little") + header + torch.tensor([1.5, -2.0]).numpy().tobytes()
    loaded = warpload.load(data)
    assert same_bits(loaded["w"], st_load(data)["w"])
    loaded["w"].zero_()
    assert torch.equal(st_load(data)["w"], torch.tensor([1.5, -2.0]))


@pytest.mark.parametrize("kind", BAD_HEADERS)
def test_load_refuses_invalid_bytes_as_safetensors_does(tmp_path, kind):
    with open(bad_file(tmp_path, kind), "rb") as handle:
        data = handle.read()
    with pytest.raises(safetensors.SafetensorError):
        st_load(data)
    with pytest.raises(safetensors.SafetensorError, match="<bytes>"):
        warpload.load(data)


def test_load_of_a_path_says_to_use_load_file(tmp_path):
    with pytest.raises(TypeError, match="load_file"):
        warpload.load(os.fspath(tmp_path / "x.safetensors"))


@pytest.mark.parametrize("backend", ["mmap", "pread"])
def test_backend_and_get_tensors_give_what_safetensors_gives(tmp_path, backend):
    tensors = {"w": random_tensor((4, 3), torch.bfloat16), "b": random_tensor((3,), torch.int64, seed=1),
               "e": random_tensor((0,), torch.float32)}
    path = os.fspath(tmp_path / "m.safetensors")
    save_file(tensors, path)
    assert_same_state(warpload.load_file(path, backend=backend), st_load_file(path, backend=backend))
    with warpload.safe_open(path, "pt", backend=backend) as ours, safetensors.safe_open(path, "pt",
                                                                                       backend=backend) as theirs:
        assert_same_state(ours.get_tensors(), theirs.get_tensors())


@pytest.mark.parametrize("load", [lambda p: warpload.load_file(p, backend="io_uring"),
                                  lambda p: warpload.safe_open(p, "pt", backend="io_uring")],
                         ids=["load_file", "safe_open"])
def test_an_unknown_backend_is_refused_as_safetensors_refuses_it(tmp_path, load):
    path = os.fspath(tmp_path / "m.safetensors")
    save_file({"w": torch.ones(2)}, path)
    with pytest.raises(safetensors.SafetensorError) as theirs:
        st_load_file(path, backend="io_uring")
    with pytest.raises(safetensors.SafetensorError) as ours:
        load(path)
    assert str(ours.value) == str(theirs.value)
