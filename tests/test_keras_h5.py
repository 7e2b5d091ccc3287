"""Keras h5 reader: plain datasets become engine records at their exact file bytes, others fall back to h5py."""
from __future__ import annotations

import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

h5py = pytest.importorskip("h5py")

from conftest import FIXTURES  # noqa: E402
from warpload import load_checkpoint  # noqa: E402
from warpload.errors import CheckpointError, UnsupportedDtypeError, UnsupportedFormatError  # noqa: E402
from warpload.formats import keras_h5  # noqa: E402
from warpload.formats.keras_h5 import H5Dataset, read_keras_h5  # noqa: E402
from warpload.plan import TensorRecord  # noqa: E402

TF = FIXTURES / "tf"
H5 = TF / "tf_gpt2_h5" / "tf_model.h5"
SHARDED = TF / "tf_gpt2_h5_sharded"


def h5_values(path, dataset_path):
    with h5py.File(path, "r") as handle:
        return handle[dataset_path][()]


def record_bytes(record: TensorRecord) -> bytes:
    with open(record.path, "rb") as handle:
        handle.seek(record.offset)
        return handle.read(record.nbytes)


def test_unsharded_file_lists_weight_names_as_plain_records():
    contents = read_keras_h5(str(H5))
    with h5py.File(H5, "r") as handle:
        expected = [name.decode() if isinstance(name, bytes) else name
                    for name in handle["transformer"].attrs["weight_names"]]
    assert not contents.stripped
    assert [tensor.name for tensor in contents.tensors] == expected
    for record in contents.tensors:
        assert isinstance(record, TensorRecord)
        values = h5_values(H5, f"transformer/{record.name}")
        assert record.shape == values.shape and record.dtype == "F32"
        assert record_bytes(record) == values.tobytes(), record.name


def test_shards_are_flat_and_the_first_one_is_empty():
    shards = sorted(SHARDED.glob("tf_model-*.h5"))
    assert read_keras_h5(str(shards[0])).tensors == ()
    names = []
    for shard in shards:
        contents = read_keras_h5(str(shard))
        assert contents.stripped
        for record in contents.tensors:
            assert record_bytes(record) == h5_values(shard, record.name).tobytes()
            names.append(record.name)
    assert len(names) == 28 and "transformer/wte/embeddings:0" in names


def write_keras_h5(path, weights: dict, *, dataset_options=None, userblock_size=0, dtypes=None):
    """A Keras save_weights-style file: one layer `dense` listing `model/dense/<name>:0` datasets."""
    dataset_options = dataset_options or {}
    with h5py.File(path, "w", userblock_size=userblock_size) as handle:
        handle.attrs["backend"] = "tensorflow"
        handle.attrs["keras_version"] = "2.15.0"
        handle.attrs["layer_names"] = [b"dense"]
        group = handle.create_group("dense")
        names = [f"model/dense/{name}:0" for name in weights]
        group.attrs["weight_names"] = [name.encode() for name in names]
        for (name, value), full in zip(weights.items(), names):
            options = dataset_options.get(name, {})
            if options.get("unallocated"):
                group.create_dataset(full, shape=value.shape, dtype=value.dtype, fillvalue=value.flat[0])
                continue
            if options.get("compact"):  # h5py's high-level API cannot ask for the compact layout
                plist = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
                plist.set_layout(h5py.h5d.COMPACT)
                space = h5py.h5s.create_simple(value.shape)
                links = h5py.h5p.create(h5py.h5p.LINK_CREATE)
                links.set_create_intermediate_group(True)
                dataset = h5py.h5d.create(group.id, full.encode(), h5py.h5t.IEEE_F32LE, space, dcpl=plist, lcpl=links)
                dataset.write(h5py.h5s.ALL, h5py.h5s.ALL, value)
                continue
            dtype = (dtypes or {}).get(name, value.dtype)
            group.create_dataset(full, data=value.astype(dtype), **options)
    return path


def kernel_and_bias(rows=3, cols=5):
    rng = np.random.default_rng(0)
    return {"kernel": rng.standard_normal((rows, cols)).astype(np.float32),
            "bias": rng.standard_normal(cols).astype(np.float32)}


@pytest.mark.parametrize("case, options, dtypes, reason", [
    ("contiguous", {}, None, None),
    ("chunked", {"chunks": (2, 2)}, None, "chunked"),
    ("gzip", {"chunks": (3, 5), "compression": "gzip"}, None, "chunked"),
    ("compact", {"compact": True}, None, "compact"),
    ("big-endian", {}, {"kernel": ">f4"}, "big-endian"),
])
def test_dense_kernels_load_transposed_whatever_the_storage(tmp_path, case, options, dtypes, reason):
    weights = kernel_and_bias()
    path = write_keras_h5(tmp_path / "model.h5", weights, dataset_options={"kernel": options}, dtypes=dtypes)
    kernel = read_keras_h5(str(path)).tensors[0]
    assert isinstance(kernel, H5Dataset if reason else TensorRecord)
    if reason:
        assert kernel.reason == reason
    state = load_checkpoint(path, from_tf=True)
    assert list(state) == ["dense.weight", "dense.bias"]
    assert torch.equal(state["dense.weight"], torch.from_numpy(weights["kernel"].T.copy()))
    assert torch.equal(state["dense.bias"], torch.from_numpy(weights["bias"]))


def test_unwritten_dataset_is_its_fill_value_not_file_bytes(tmp_path):
    weights = {"bias": np.full(4, 2.5, dtype=np.float32)}
    path = write_keras_h5(tmp_path / "model.h5", weights, dataset_options={"bias": {"unallocated": True}})
    (tensor,) = read_keras_h5(str(path)).tensors
    assert isinstance(tensor, H5Dataset) and tensor.reason == "storage not allocated"
    assert torch.equal(load_checkpoint(path, from_tf=True)["dense.bias"], torch.full((4,), 2.5))


def test_user_block_offsets_are_absolute(tmp_path):
    weights = kernel_and_bias()
    path = write_keras_h5(tmp_path / "model.h5", weights, userblock_size=512)
    assert not keras_h5.sniff(path.read_bytes()[:16], path.stat().st_size) and keras_h5.is_hdf5(str(path))
    kernel = read_keras_h5(str(path)).tensors[0]
    assert isinstance(kernel, TensorRecord) and kernel.offset > 512
    assert record_bytes(kernel) == weights["kernel"].tobytes()
    loaded = load_checkpoint(path, from_tf=True)["dense.weight"]
    assert torch.equal(loaded, torch.from_numpy(weights["kernel"].T.copy()))


@pytest.mark.parametrize("keep", [0.5, 0.97])
def test_truncated_file_is_a_checkpoint_error(tmp_path, keep):
    data = H5.read_bytes()
    path = tmp_path / "tf_model.h5"
    path.write_bytes(data[:int(len(data) * keep)])
    with pytest.raises(CheckpointError, match="tf_model.h5"):
        load_checkpoint(path, from_tf=True)


def test_listed_weight_without_dataset_names_it(tmp_path):
    path = write_keras_h5(tmp_path / "model.h5", kernel_and_bias())
    with h5py.File(path, "a") as handle:
        handle["dense"].attrs["weight_names"] = [b"model/dense/kernel:0", b"model/dense/gone:0"]
    with pytest.raises(CheckpointError, match="gone"):
        read_keras_h5(str(path))


def test_without_from_tf_the_file_says_to_pass_it():
    with pytest.raises(UnsupportedFormatError, match="from_tf=True"):
        load_checkpoint(H5)


def test_missing_h5py_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "h5py", None)
    with pytest.raises(ImportError, match="pip install h5py"):
        load_checkpoint(H5, from_tf=True)


def test_sharded_index_missing_a_shard_is_not_found(tmp_path):
    folder = tmp_path / "sharded"
    shutil.copytree(SHARDED, folder)
    (folder / "tf_model-00004-of-00006.h5").unlink()
    with pytest.raises(FileNotFoundError, match="tf_model-00004-of-00006.h5"):
        load_checkpoint(folder, from_tf=True)


def test_importing_warpload_and_its_readers_does_not_import_h5py():
    code = ("import sys, warpload, warpload.formats, warpload.tf.checkpoint, warpload.cli.inspect\n"
            "print('h5py' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def test_name_lists_split_over_several_attributes_are_joined(tmp_path):
    # tf_utils.save_attributes_to_hdf5_group splits lists bigger than an object header into name0, name1, ...
    weights = kernel_and_bias()
    path = write_keras_h5(tmp_path / "model.h5", weights)
    with h5py.File(path, "a") as handle:
        del handle.attrs["layer_names"]
        handle.attrs["layer_names0"] = [b"dense"]
        group = handle["dense"]
        del group.attrs["weight_names"]
        group.attrs["weight_names0"] = [b"model/dense/kernel:0"]
        group.attrs["weight_names1"] = [b"model/dense/bias:0"]
    assert [tensor.name for tensor in read_keras_h5(str(path)).tensors] == ["model/dense/kernel:0",
                                                                              "model/dense/bias:0"]


def rewrite_chunked(source_path, path):
    """A copy of an h5 file whose every dataset is chunked and gzip-compressed: nothing the engine reads in place."""
    with h5py.File(source_path, "r") as source, h5py.File(path, "w") as target:
        for key, value in source.attrs.items():
            target.attrs[key] = value

        def copy(name, item):
            if isinstance(item, h5py.Group):
                group = target.require_group(name)
                for key, value in item.attrs.items():
                    group.attrs[key] = value
            else:
                target.create_dataset(name, data=item[()], chunks=True, compression="gzip")

        source.visititems(copy)
    return path


def test_every_dataset_rewritten_chunked_and_compressed_loads_the_same(tmp_path):
    path = rewrite_chunked(H5, tmp_path / "tf_model.h5")
    assert all(isinstance(tensor, H5Dataset) for tensor in read_keras_h5(str(path)).tensors)
    rewritten, original = load_checkpoint(path, from_tf=True), load_checkpoint(H5, from_tf=True)
    assert list(rewritten) == list(original)
    assert all(torch.equal(rewritten[name], original[name]) for name in original)


def test_a_dataset_past_the_end_of_the_file_is_refused(monkeypatch):
    # HDF5 itself refuses files shorter than the end address in their superblock, so the reader's own
    # bound check is exercised by making the file look shorter than where wte's bytes end.
    monkeypatch.setattr(keras_h5.os.path, "getsize", lambda path: 20_000)
    with pytest.raises(CheckpointError, match="ends past the end of the file") as raised:
        read_keras_h5(str(H5))
    assert raised.value.tensor == "tfgpt2lm_head_model/transformer/wte/embeddings:0" and raised.value.offset == 10480


def test_kernels_are_transposed_straight_into_model_parameters(tmp_path):
    # from_pretrained's path: mapped records placed into preallocated parameters by the engine.
    from warpload.engine.fill import fill_parameters
    from warpload.engine.tf_tensors import tf_sources
    from warpload.tf.checkpoint import read_tf_checkpoint

    weights = kernel_and_bias(rows=70, cols=130)
    path = write_keras_h5(tmp_path / "model.h5", weights)
    sources = tf_sources(read_tf_checkpoint(str(path)), {"dense.weight": (130, 70), "dense.bias": (130,)}, "")
    assert sources["dense.weight"].transpose
    targets = {"dense.weight": torch.empty(130, 70), "dense.bias": torch.empty(130, dtype=torch.bfloat16)}
    fill_parameters(targets, sources)
    assert torch.equal(targets["dense.weight"], torch.from_numpy(weights["kernel"].T.copy()))
    assert torch.equal(targets["dense.bias"], torch.from_numpy(weights["bias"]).to(torch.bfloat16))


def test_complex_datasets_come_back_and_string_datasets_are_named(tmp_path):
    # A complex128 kernel is transposed too: in torch, as the engine transposes elements of at most 8 bytes.
    weights = {"c64": np.array([1 + 2j, -3.5j], dtype=np.complex64),
               "kernel": (np.arange(6) * (1e300 - 1j)).reshape(2, 3).astype(np.complex128)}
    path = write_keras_h5(tmp_path / "model.h5", weights)
    state = load_checkpoint(path, from_tf=True)
    assert torch.equal(state["dense.c64"], torch.from_numpy(weights["c64"]))
    assert torch.equal(state["dense.weight"], torch.from_numpy(weights["kernel"].T.copy()))
    with h5py.File(path, "a") as handle:
        handle["dense"].create_dataset("model/dense/vocab:0", data=np.array([b"a", b"bc"]))
        handle["dense"].attrs["weight_names"] = [b"model/dense/c64:0", b"model/dense/vocab:0"]
    with pytest.raises(UnsupportedDtypeError, match=r"model.h5: 1 tensor.*'model/dense/vocab:0' \(\|S2.*"
                                                    r"skip_unsupported=True"):
        load_checkpoint(path, from_tf=True)
    assert list(load_checkpoint(path, from_tf=True, skip_unsupported=True)) == ["dense.c64"]
