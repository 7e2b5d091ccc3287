"""Property-based damage of Keras h5 files, as a user's broken download would be: every failure is a warpload
CheckpointError naming the file (chained to h5py's error), never h5py's own OSError, KeyError or UnicodeError."""
from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

h5py = pytest.importorskip("h5py")

from conftest import FIXTURES  # noqa: E402
from warpload import load_checkpoint  # noqa: E402
from warpload.errors import CheckpointError, WarploadError  # noqa: E402

TF = FIXTURES / "tf"
# Derandomized: the same damaged files on every run, few enough for a few seconds in CI.
FUZZ = settings(max_examples=60, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@lru_cache(maxsize=None)
def chunked_copy() -> bytes:
    """A small Keras file whose datasets are chunked and gzip-compressed, so loading reads them through h5py
    (keras_h5.read_dataset) rather than as byte ranges."""
    import tempfile

    import numpy as np

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "chunked.h5"
        with h5py.File(path, "w") as handle:
            handle.attrs["backend"] = "tensorflow"
            handle.attrs["keras_version"] = "2.15.0"
            handle.attrs["layer_names"] = [b"dense"]
            group = handle.create_group("dense")
            group.attrs["weight_names"] = [b"model/dense/kernel:0", b"model/dense/bias:0"]
            group.create_dataset("model/dense/kernel:0", data=np.arange(48, dtype=np.float32).reshape(6, 8),
                                 chunks=(2, 4), compression="gzip")
            group.create_dataset("model/dense/bias:0", data=np.ones(8, dtype=np.float32), chunks=(4,))
        return path.read_bytes()


SOURCES = {
    "unsharded": lambda: (TF / "tf_gpt2_h5" / "tf_model.h5").read_bytes(),
    "shard": lambda: (TF / "tf_gpt2_h5_sharded" / "tf_model-00003-of-00006.h5").read_bytes(),
    "chunked": chunked_copy,
}


@lru_cache(maxsize=None)
def source_bytes(name: str) -> bytes:
    return SOURCES[name]()


# HDF5 keeps its metadata (superblock, object headers, B-trees, heaps) mostly near the start of these files;
# half of the flips land in the first 8 KiB so that most damage reaches the parsers, not only tensor bytes.
flips = st.lists(st.tuples(st.booleans(), st.integers(0, 10**7), st.integers(1, 255)), min_size=1, max_size=6)


def damaged(name: str, changes, cut) -> bytes:
    out = bytearray(source_bytes(name))
    for in_metadata, position, mask in changes:
        out[position % (min(len(out), 8192) if in_metadata else len(out))] ^= mask
    return bytes(out if cut is None else out[:cut % len(out)])


def load_damaged(path: Path) -> None:
    """Loads a damaged file as a user would; a failure must be a warpload error, and a CheckpointError names
    the file."""
    try:
        state = load_checkpoint(path, from_tf=True)
    except CheckpointError as err:
        assert os.fspath(path) in str(err), err
        return
    except WarploadError:
        return
    assert all(isinstance(tensor, torch.Tensor) for tensor in state.values())


@FUZZ
@given(name=st.sampled_from(sorted(SOURCES)), changes=flips, cut=st.none() | st.integers(0, 10**7))
def test_damaged_h5_files_raise_warpload_errors_naming_the_file(tmp_path, name, changes, cut):
    path = tmp_path / "tf_model.h5"
    path.write_bytes(damaged(name, changes, cut))
    load_damaged(path)


def test_h5pys_own_errors_become_checkpoint_errors_chained_to_them(tmp_path):
    """Damage found by the fuzzer above that used to escape as h5py's OSError ("Can't synchronously read data"),
    KeyError and UnicodeEncodeError ("surrogates not allowed"): each becomes a CheckpointError naming the file
    and the object being read, with h5py's error as its cause."""
    causes = set()
    for seed in range(40):
        changes = [(True, seed * 7919 + i * 104729, 1 + (seed * 31 + i) % 255) for i in range(4)]
        path = tmp_path / f"damaged{seed}.h5"
        path.write_bytes(damaged("unsharded", changes, None))
        try:
            load_checkpoint(path, from_tf=True)
        except CheckpointError as err:
            assert os.fspath(path) in str(err)
            if err.__cause__ is not None:
                assert type(err.__cause__).__name__ in str(err)
                causes.add(type(err.__cause__))
    assert causes, "no damage reached h5py: the test no longer exercises the wrapping"


def test_a_damaged_global_heap_is_refused_instead_of_hanging_hdf5(tmp_path):
    """The fuzzer's one hang: a collection size grown from 4096 to 58112 bytes makes HDF5 2.0 walk zero bytes
    past the heap forever while h5py reads layer_names. The load runs in a child process, so that a regression
    fails this test instead of hanging the suite."""
    import struct
    import subprocess
    import sys

    data = bytearray(source_bytes("unsharded"))
    heap = data.index(b"GCOL")
    assert struct.unpack_from("<Q", data, heap + 8) == (4096,)
    struct.pack_into("<Q", data, heap + 8, 58112)
    path = tmp_path / "tf_model.h5"
    path.write_bytes(bytes(data))
    code = ("import sys, warpload\n"
            "try:\n    warpload.load_checkpoint(sys.argv[1], from_tf=True)\n"
            "except warpload.errors.CheckpointError as err:\n    print(err)\n")
    result = subprocess.run([sys.executable, "-c", code, os.fspath(path)], capture_output=True, text=True,
                            timeout=120)
    assert f"global heap collection at byte {heap} is damaged" in result.stdout, result.stderr
