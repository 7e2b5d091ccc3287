"""load_checkpoint on PyTorch .bin files (zip and legacy, single and sharded), tensor by tensor against torch.load."""
from __future__ import annotations

import io
import os
import pickle
import struct
import zipfile
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
from huggingface_hub import save_torch_state_dict
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file

import warpload
from warpload.dtypes import DTYPES
from conftest import FIXTURES, SAVEABLE_DTYPES, random_tensor, same_bits
from warpload.engine import host
from warpload.errors import CheckpointError, HeaderError, UnsupportedDtypeError, UnsupportedFormatError

BIN_FIXTURES = FIXTURES / "tf"
# The dtypes that have a legacy storage class (torch/storage.py), so torch's legacy writer takes them.
LEGACY_DTYPES = [torch.bool, torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64, torch.float16,
                 torch.bfloat16, torch.float32, torch.float64, torch.complex64]


def torch_reference(path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True, map_location="cpu")


def shared_groups(state: dict[str, torch.Tensor]) -> set[frozenset[str]]:
    """Names grouped by the storage they view (storages with bytes only: empty ones have no address)."""
    groups: dict[int, set[str]] = {}
    for name, tensor in state.items():
        if tensor.untyped_storage().nbytes():
            groups.setdefault(tensor.untyped_storage().data_ptr(), set()).add(name)
    return {frozenset(names) for names in groups.values() if len(names) > 1}


def dense(tensor: torch.Tensor) -> torch.Tensor:
    """A copy with standard strides (same_bits views bytes, which a stride-0 or size-1 layout can refuse)."""
    return torch.empty_like(tensor, memory_format=torch.contiguous_format).copy_(tensor)


def assert_same_as_torch(loaded: dict, expected: dict, convert=None) -> None:
    """Same names in the same order, same bits, strides, storage offsets, and the same storage sharing."""
    assert list(loaded) == list(expected)
    for name, tensor in expected.items():
        got = loaded[name]
        assert same_bits(dense(got), dense(convert(tensor) if convert else tensor)), name
        assert (got.stride(), got.storage_offset()) == (tensor.stride(), tensor.storage_offset()), name
    assert shared_groups(loaded) == shared_groups(expected)


def views_of_one_storage(dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Tensors that view one storage the ways a state dict can: whole, transposed, sliced, 0-d, empty, expanded."""
    base = random_tensor((6, 10), dtype, seed=3)
    return {
        "whole": base,
        "transposed": base.t(),
        "block": base[2:4, 3:],
        "row": base[5],
        "column": base[:, 7],
        "scalar": base[1, 1],
        "empty_slice": base[3:3],
        "expanded": base[0, :3].unsqueeze(0).expand(4, 3),
        "tied": base,
    }


@pytest.mark.parametrize("dtype", SAVEABLE_DTYPES, ids=str)
def test_every_dtype_matches_torch_load(tmp_path, dtype):
    state = {"matrix": random_tensor((7, 9), dtype, seed=1), "scalar": random_tensor((), dtype, seed=2),
             "empty": random_tensor((0, 5), dtype), **{f"view.{k}": v for k, v in views_of_one_storage(dtype).items()}}
    path = tmp_path / "pytorch_model.bin"
    torch.save(state, path)
    assert_same_as_torch(warpload.load_checkpoint(path), torch_reference(path))


@pytest.mark.parametrize("dtype", LEGACY_DTYPES, ids=str)
def test_legacy_format_matches_torch_load(tmp_path, dtype):
    state = {"matrix": random_tensor((5, 3), dtype, seed=4), **views_of_one_storage(dtype)}
    path = tmp_path / "legacy.bin"
    torch.save(state, path, _use_new_zipfile_serialization=False)
    assert not zipfile.is_zipfile(path)
    assert_same_as_torch(warpload.load_checkpoint(path), torch_reference(path))


@pytest.mark.parametrize("name", ["pytorch_model.bin", "pytorch_model_legacy.bin"])
def test_fixture_bins_match_torch_and_the_safetensors_reference(name):
    path = BIN_FIXTURES / "pt_gpt2_from_h5_bin" / name
    loaded = warpload.load_checkpoint(path)
    assert_same_as_torch(loaded, torch_reference(path))
    reference = warpload.load_checkpoint(BIN_FIXTURES / "pt_gpt2_from_h5")
    assert all(same_bits(loaded[k], reference[k]) for k in reference) and len(loaded) == len(reference) + 1


def test_fixture_tied_weights_share_one_storage():
    loaded = warpload.load_checkpoint(BIN_FIXTURES / "pt_gpt2_from_h5_bin")
    assert {frozenset({"lm_head.weight", "transformer.wte.weight"})} == shared_groups(loaded)
    loaded["transformer.wte.weight"][0, 0] = 42.0
    assert loaded["lm_head.weight"][0, 0] == 42.0


class TiedLM(torch.nn.Module):
    """A transformers-style model: the output projection is the input embedding (tie_word_embeddings)."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(50, 8)
        self.norm = torch.nn.LayerNorm(8)
        self.head = torch.nn.Linear(8, 50, bias=False)
        self.head.weight = self.embed.weight
        self.register_buffer("position_ids", torch.arange(16).unsqueeze(0))


@pytest.mark.parametrize("legacy", [False, True])
def test_module_state_dict_with_tied_weights_matches_torch(tmp_path, legacy):
    path = tmp_path / "pytorch_model.bin"
    torch.save(TiedLM().state_dict(), path, _use_new_zipfile_serialization=not legacy)
    loaded = warpload.load_checkpoint(path)
    assert_same_as_torch(loaded, torch_reference(path))
    assert shared_groups(loaded) == {frozenset({"embed.weight", "head.weight"})}


@pytest.mark.parametrize("fixture", ["pt_gpt2_from_h5_bin_sharded", "pt_gpt2_from_h5_bin_sharded/"
                                     "pytorch_model.bin.index.json"])
def test_sharded_fixture_equals_the_single_file(fixture):
    loaded = warpload.load_checkpoint(BIN_FIXTURES / fixture)
    single = torch_reference(BIN_FIXTURES / "pt_gpt2_from_h5_bin" / "pytorch_model.bin")
    assert set(loaded) == set(single)
    assert all(same_bits(loaded[k], single[k]) for k in single)


def test_sharded_bin_is_one_engine_call(tmp_path, monkeypatch):
    state = {f"layer.{i}.weight": torch.randn(40, 30) for i in range(8)}
    state["ids"] = torch.arange(100)
    save_torch_state_dict(state, tmp_path, max_shard_size=10_000, safe_serialization=False)
    assert len(list(tmp_path.glob("pytorch_model-*.bin"))) > 2
    calls = []
    execute = host.execute
    monkeypatch.setattr(host, "execute", lambda plan, files=None: calls.append(plan) or execute(plan, files))
    loaded = warpload.load_checkpoint(tmp_path, dtype=torch.float16)
    assert len(calls) == 1 and len(calls[0].paths) > 2
    assert set(loaded) == set(state)
    assert all(same_bits(loaded[k], v.half() if v.is_floating_point() else v) for k, v in state.items())


@pytest.mark.parametrize("legacy", [False, True])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_dtype_converts_float_storages_and_keeps_views(tmp_path, legacy, dtype):
    state = {**views_of_one_storage(torch.float32), "ids": torch.arange(12).view(3, 4).t()}
    path = tmp_path / "pytorch_model.bin"
    torch.save(state, path, _use_new_zipfile_serialization=not legacy)
    convert = lambda t: t.to(dtype) if t.is_floating_point() else t  # noqa: E731
    assert_same_as_torch(warpload.load_checkpoint(path, dtype=dtype), torch_reference(path), convert)


@pytest.mark.parametrize("legacy", [False, True])
def test_zero_copy_views_the_file_and_copies_only_unaligned_storages(tmp_path, monkeypatch, legacy):
    state = {"w": torch.randn(33, 7), "b": torch.randn(5).double(), "h": torch.randn(3).half(),
             **views_of_one_storage(torch.float32)}
    path = tmp_path / "pytorch_model.bin"
    torch.save(state, path, _use_new_zipfile_serialization=not legacy)
    copied = []
    materialize = host.materialize
    monkeypatch.setattr(host, "materialize", lambda plan, *a, **k: copied.append(plan) or materialize(plan, *a, **k))
    loaded = warpload.load_checkpoint(path, zero_copy=True)
    assert_same_as_torch(loaded, torch_reference(path))
    # Zip storages are 64-byte aligned; legacy ones are packed after 8-byte counts and pickles of any size, so
    # which of them are aligned to their element size varies with the pickle: only the unaligned are copied.
    copied_storages = [s for plan in copied for s in plan.storages]
    assert copied_storages == [] if not legacy else all(
        s.offset % (DTYPES[s.source_dtype].bits // 8) for s in copied_storages)
    with pytest.raises(ValueError, match="zero_copy"):
        warpload.load_checkpoint(path, zero_copy=True, dtype=torch.float16)


def test_folder_prefers_safetensors_then_bin_then_bin_index(tmp_path):
    """transformers' order (from_pretrained picks the same file: test_checkpoint_resolution.py)."""
    save_torch_state_dict({"w": torch.full((2,), 2.0), "v": torch.ones(2)}, tmp_path, max_shard_size=8,
                          safe_serialization=False)
    assert (tmp_path / "pytorch_model.bin.index.json").exists()
    assert torch.equal(warpload.load_checkpoint(tmp_path)["w"], torch.full((2,), 2.0))
    torch.save({"w": torch.zeros(2)}, tmp_path / "pytorch_model.bin")
    assert torch.equal(warpload.load_checkpoint(tmp_path)["w"], torch.zeros(2))
    save_file({"w": torch.ones(2)}, tmp_path / "model.safetensors")
    assert torch.equal(warpload.load_checkpoint(tmp_path)["w"], torch.ones(2))


def test_folder_with_one_index_of_another_name_uses_it(tmp_path):
    save_torch_state_dict({"w": torch.ones(3), "v": torch.zeros(9)}, tmp_path, max_shard_size=16,
                          safe_serialization=False, filename_pattern="diffusion_pytorch_model{suffix}.bin")
    assert [p.name for p in tmp_path.glob("*.index.json")] == ["diffusion_pytorch_model.bin.index.json"]
    assert set(warpload.load_checkpoint(tmp_path)) == {"w", "v"}


@pytest.mark.parametrize("legacy", [False, True])
def test_format_is_recognised_by_content(tmp_path, legacy):
    torch.save({"w": torch.ones(4)}, tmp_path / "weights.data", _use_new_zipfile_serialization=not legacy)
    assert torch.equal(warpload.load_checkpoint(tmp_path / "weights.data")["w"], torch.ones(4))


def test_load_file_stays_safetensors_only():
    with pytest.raises(HeaderError):
        warpload.load_file(BIN_FIXTURES / "pt_gpt2_from_h5_bin" / "pytorch_model.bin")


def test_parameters_and_tensors_with_attributes_load_as_tensors(tmp_path):
    tagged = torch.arange(4.0)
    tagged.note = "python attribute"  # saved through torch._tensor._rebuild_from_type_v2
    state = {"param": torch.nn.Parameter(torch.randn(3, 2)), "tagged": tagged}
    torch.save(state, tmp_path / "m.bin")
    expected = torch_reference(tmp_path / "m.bin")
    loaded = warpload.load_checkpoint(tmp_path / "m.bin")
    assert all(same_bits(loaded[k], expected[k].detach()) for k in state)


@pytest.mark.parametrize("wrapper", ["state_dict", "model", "module"])
def test_folders_find_the_state_dict_in_common_wrappers(tmp_path, wrapper):
    state = {"w": torch.randn(3, 2), "b": torch.randn(2)}
    torch.save({wrapper: state, "epoch": 3, "optimizer": {"lr": 0.1}}, tmp_path / "pytorch_model.bin")
    assert_same_as_torch(warpload.load_checkpoint(tmp_path), torch_reference(tmp_path / "pytorch_model.bin")[wrapper])


def test_folders_without_a_state_dict_are_refused_with_advice(tmp_path):
    torch.save({"weights": {"w": torch.ones(2)}, "epoch": 3}, tmp_path / "pytorch_model.bin")
    with pytest.raises(UnsupportedFormatError, match="'weights' is a dict.*warpload.load_torch"):
        warpload.load_checkpoint(tmp_path)
    torch.save(torch.ones(2), tmp_path / "pytorch_model.bin")
    with pytest.raises(UnsupportedFormatError, match="not a state dict"):
        warpload.load_checkpoint(tmp_path)


def test_a_torch_file_loads_whole_as_torch_load_gives_it(tmp_path):
    checkpoint = {"model": OrderedDict(w=torch.ones(2)), "epoch": 3, "z": torch.ones(2, dtype=torch.complex128)}
    torch.save(checkpoint, tmp_path / "ckpt.bin")
    loaded = warpload.load_checkpoint(tmp_path / "ckpt.bin")
    assert type(loaded["model"]) is OrderedDict and loaded["epoch"] == 3
    assert torch.equal(loaded["z"], checkpoint["z"]) and torch.equal(loaded["model"]["w"], torch.ones(2))


def test_dtypes_without_a_safetensors_name_load_or_are_refused_for_models(tmp_path):
    # complex128 has a warpload dtype (C128, as TF bundles hold it); complex32 has none on the flat path.
    z = torch.tensor([1 + 2j, 3 - 4j], dtype=torch.complex128)
    torch.save({"z": z}, tmp_path / "pytorch_model.bin")
    assert torch.equal(warpload.load_checkpoint(tmp_path)["z"], z)
    torch.save({"z": torch.ones(2, dtype=torch.complex32)}, tmp_path / "pytorch_model.bin")
    with pytest.raises(UnsupportedDtypeError, match="complex32.*load_torch"):
        warpload.load_checkpoint(tmp_path)


@pytest.mark.filterwarnings("ignore:torch.quantize_per_tensor:UserWarning", "ignore:TypedStorage is deprecated")
def test_sparse_and_quantized_tensors_are_unsupported_not_unsafe(tmp_path):
    for name, tensor in [("sparse", torch.eye(3).to_sparse()),
                         ("quantized", torch.quantize_per_tensor(torch.ones(3), 0.1, 0, torch.qint8))]:
        torch.save({name: tensor}, tmp_path / f"{name}.bin")
        torch_reference(tmp_path / f"{name}.bin")  # torch's weights-only load takes them
        with pytest.raises((UnsupportedFormatError, UnsupportedDtypeError), match="torch.load"):
            warpload.load_checkpoint(tmp_path / f"{name}.bin")


@st.composite
def strided_views(draw, numel: int):
    """(size, stride, storage offset) of any view that fits in a storage of numel elements."""
    size = tuple(draw(st.lists(st.integers(0, 4), max_size=3)))
    stride = tuple(draw(st.lists(st.integers(0, 5), min_size=len(size), max_size=len(size))))
    reach = sum((dim - 1) * step for dim, step in zip(size, stride)) if all(size) else 0
    offset = draw(st.integers(0, max(numel - 1 - reach, 0)))
    return (size, stride, offset) if offset + reach < numel or not all(size) else ((), (), 0)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), legacy=st.booleans())
def test_random_views_of_random_storages_match_torch_load(tmp_path, data, legacy):
    dtypes = LEGACY_DTYPES if legacy else SAVEABLE_DTYPES
    state = {}
    for i in range(data.draw(st.integers(1, 3))):
        base = random_tensor((data.draw(st.integers(1, 40)),), data.draw(st.sampled_from(dtypes)), seed=i)
        state[f"base{i}"] = base
        for j in range(data.draw(st.integers(0, 3))):
            size, stride, offset = data.draw(strided_views(base.numel()))
            state[f"view{i}.{j}"] = base.as_strided(size, stride, offset)
    path = tmp_path / "random.bin"
    torch.save(state, path, _use_new_zipfile_serialization=not legacy)
    assert_same_as_torch(warpload.load_checkpoint(path, zero_copy=data.draw(st.booleans())), torch_reference(path))


# Hand-written checkpoints: pickles that torch.save no longer writes, or writes only when asked to.
class Storage:
    """Pickled as the persistent id it holds."""

    def __init__(self, *pid) -> None:
        self.pid = pid


class Rebuild:
    """Pickled as a call of a torch._utils rebuild function."""

    def __init__(self, function, *args) -> None:
        self.function, self.args = function, args

    def __reduce__(self):
        return self.function, self.args


class _StoragePickler(pickle.Pickler):
    def persistent_id(self, obj):
        return obj.pid if isinstance(obj, Storage) else None


def dumps(obj, protocol: int = 2) -> bytes:
    """A pickle as torch.save writes it: storages become persistent ids."""
    buffer = io.BytesIO()
    _StoragePickler(buffer, protocol=protocol).dump(obj)
    return buffer.getvalue()


def tensor_v2(storage: Storage, offset: int, size: tuple, stride: tuple) -> Rebuild:
    return Rebuild(torch._utils._rebuild_tensor_v2, storage, offset, size, stride, False, OrderedDict())


def write_zip_checkpoint(path: Path, data_pkl: bytes, records: dict[str, bytes], *, folder: str = "archive",
                         byteorder: str = "little", version: str = "3\n") -> Path:
    """A torch.save-shaped archive written by Python's zipfile (stored, not 64-byte aligned)."""
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(f"{folder}/data.pkl", data_pkl)
        archive.writestr(f"{folder}/byteorder", byteorder)
        for key, data in records.items():
            archive.writestr(f"{folder}/data/{key}", data)
        archive.writestr(f"{folder}/version", version)
    return path


def write_legacy_checkpoint(path: Path, main_pickle: bytes, storages: dict[str, tuple[int, bytes]],
                            little_endian: bool = True) -> Path:
    """The legacy layout (formats.md 2.5): magic, version, sys_info, main pickle, keys, then count + bytes each."""
    keys = sorted(storages)
    parts = [pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2), pickle.dumps(1001, protocol=2),
             pickle.dumps({"protocol_version": 1001, "little_endian": little_endian, "type_sizes": {}}, protocol=2),
             main_pickle, pickle.dumps(keys, protocol=2)]
    parts += [struct.pack("<q", storages[key][0]) + storages[key][1] for key in keys]
    path.write_bytes(b"".join(parts))
    return path


def test_legacy_storage_views_match_torch(tmp_path):
    # torch < 0.4 pickled storage views: ('storage', cls, root key, location, root numel, (view key, offset, numel)).
    data = torch.arange(24, dtype=torch.float32)
    root = Storage("storage", torch.FloatStorage, "root", "cpu", 24, None)
    view = Storage("storage", torch.FloatStorage, "root", "cpu", 24, ("view", 6, 12))
    state = OrderedDict(whole=tensor_v2(root, 0, (4, 6), (6, 1)), part=tensor_v2(view, 2, (2, 5), (5, 1)))
    path = write_legacy_checkpoint(tmp_path / "views.bin", dumps(state), {"root": (24, data.numpy().tobytes())})
    assert_same_as_torch(warpload.load_checkpoint(path), torch_reference(path))


def test_untyped_storage_with_v3_dtype_matches_torch(tmp_path):
    storage = Storage("storage", torch.UntypedStorage, "0", "cpu", 12)
    state = {"half": Rebuild(torch._utils._rebuild_tensor_v3, storage, 1, (5,), (1,), False, OrderedDict(),
                             torch.float16)}
    path = write_zip_checkpoint(tmp_path / "u.bin", dumps(state), {"0": bytes(range(12))})
    assert_same_as_torch(warpload.load_checkpoint(path), torch_reference(path))


@pytest.mark.parametrize("problem, records, match", [
    ("a record shorter than its storage", {"0": b"\x00" * 20}, "holds 20 bytes, but its storage needs 24"),
    ("a persistent id naming no record", {"1": b"\x00" * 24}, "no record archive/data/0"),
])
def test_storage_records_are_checked(tmp_path, problem, records, match):
    state = {"w": tensor_v2(Storage("storage", torch.FloatStorage, "0", "cpu", 6), 0, (6,), (1,))}
    path = write_zip_checkpoint(tmp_path / "bad.bin", dumps(state), records)
    with pytest.raises(CheckpointError, match=match):
        warpload.load_checkpoint(path)


@pytest.mark.parametrize("offset, size, stride", [(0, (7,), (1,)), (5, (2,), (1,)), (0, (3, 3), (2, 1)),
                                                  (-1, (1,), (1,)), (0, (2,), (-1,)), (0, (2, 2), (1,))])
@pytest.mark.parametrize("legacy", [False, True])
def test_tensor_views_outside_their_storage_are_refused(tmp_path, offset, size, stride, legacy):
    storage = Storage("storage", torch.FloatStorage, "0", "cpu", 6, *([None] if legacy else []))
    pickled = dumps({"w": tensor_v2(storage, offset, size, stride)})
    path = tmp_path / "bad.bin"
    if legacy:
        write_legacy_checkpoint(path, pickled, {"0": (6, b"\x00" * 24)})
    else:
        write_zip_checkpoint(path, pickled, {"0": b"\x00" * 24})
    with pytest.raises(CheckpointError, match="tensor 'w'"):
        warpload.load_checkpoint(path)


@pytest.mark.parametrize("problem, storages, match", [
    ("count differs from the id", {"0": (5, b"\x00" * 20)}, "has 5 elements, its id says 6"),
    ("bytes cut short", {"0": (6, b"\x00" * 23)}, "truncated"),
    ("an id missing from the key list", {}, "does not hold"),
])
def test_legacy_storage_layout_is_checked(tmp_path, problem, storages, match):
    pickled = dumps({"w": tensor_v2(Storage("storage", torch.FloatStorage, "0", "cpu", 6, None), 0, (6,), (1,))})
    path = write_legacy_checkpoint(tmp_path / "bad.bin", pickled, storages)
    with pytest.raises(CheckpointError, match=match):
        warpload.load_checkpoint(path)


@pytest.mark.parametrize("folder", [False, True])
def test_big_endian_archives_are_swapped_while_copying(tmp_path, folder):
    state = {"w": tensor_v2(Storage("storage", torch.FloatStorage, "0", "cpu", 2), 0, (2,), (1,))}
    path = write_zip_checkpoint(tmp_path / "pytorch_model.bin", dumps(state), {"0": struct.pack(">2f", 1.0, 2.0)},
                                byteorder="big")
    assert torch.equal(torch_reference(path)["w"], torch.tensor([1.0, 2.0]))  # torch swaps them
    assert torch.equal(warpload.load_checkpoint(tmp_path if folder else path)["w"], torch.tensor([1.0, 2.0]))


def test_unknown_byte_orders_are_refused(tmp_path):
    state = {"w": tensor_v2(Storage("storage", torch.FloatStorage, "0", "cpu", 1), 0, (1,), (1,))}
    path = write_zip_checkpoint(tmp_path / "odd.bin", dumps(state), {"0": b"\x00" * 4}, byteorder="middle")
    with pytest.raises(UnsupportedFormatError, match="byteorder says 'middle'"):
        warpload.load_checkpoint(path)


@pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")
def test_torchscript_archives_are_refused(tmp_path):
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), tmp_path / "scripted.pt")
    with pytest.raises(UnsupportedFormatError, match="TorchScript.*torch.jit.load"):
        warpload.load_checkpoint(tmp_path / "scripted.pt")


def test_unknown_archive_version_is_refused(tmp_path):
    state = {"w": tensor_v2(Storage("storage", torch.FloatStorage, "0", "cpu", 1), 0, (1,), (1,))}
    path = write_zip_checkpoint(tmp_path / "v.bin", dumps(state), {"0": b"\x00" * 4}, version="99\n")
    with pytest.raises(UnsupportedFormatError, match="version '99'"):
        warpload.load_checkpoint(path)


def test_zip_without_a_torch_folder_is_unsupported(tmp_path):
    with zipfile.ZipFile(tmp_path / "plain.zip", "w") as archive:
        archive.writestr("readme.txt", "not a checkpoint")
    with pytest.raises(UnsupportedFormatError, match="not in a folder"):
        warpload.load_checkpoint(tmp_path / "plain.zip")


def test_reader_does_not_import_torch():
    import subprocess
    import sys

    code = ("import sys; from warpload.formats import torchbin, torch_legacy\n"
            f"folder = {os.fspath(BIN_FIXTURES / 'pt_gpt2_from_h5_bin')!r}\n"
            "print(len(torchbin.read_records(folder + '/pytorch_model.bin').records),\n"
            "      len(torch_legacy.read_records(folder + '/pytorch_model_legacy.bin').records),\n"
            "      'torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["29", "29", "False"]


@pytest.mark.parametrize("wrapper, big_endian", [("state_dict", False), ("model", True), ("module", False)])
def test_from_pretrained_finds_the_state_dict_in_training_checkpoints(tmp_path, wrapper, big_endian):
    from model_checkpoints import tiny_transformers_model
    from torch_structures import to_big_endian

    reference = tiny_transformers_model("gpt2")
    reference.config.save_pretrained(tmp_path)
    checkpoint = {wrapper: reference.state_dict(), "optimizer": {"state": {}, "lr": 0.1}, "epoch": 2}
    torch.save(checkpoint, tmp_path / "little.bin")
    if big_endian:
        to_big_endian(tmp_path / "little.bin", tmp_path / "pytorch_model.bin")
    else:
        (tmp_path / "little.bin").rename(tmp_path / "pytorch_model.bin")
    model = warpload.AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.float32)
    tokens = torch.arange(10).unsqueeze(0)
    with torch.no_grad():
        assert torch.equal(model(tokens).logits, reference(tokens).logits)


def test_folders_refuse_tensors_a_model_cannot_load_with_advice(tmp_path):
    x = torch.randn(3, dtype=torch.cfloat)
    for state, match in [({"w": torch.empty(2, device="meta")}, "'w' is a meta tensor.*load_torch"),
                         ({"w": x.conj()}, "'w' carries the conjugate.*load_torch")]:
        torch.save(state, tmp_path / "pytorch_model.bin")
        with pytest.raises(UnsupportedFormatError, match=match):
            warpload.load_checkpoint(tmp_path)


def test_load_torch_dtype_converts_float_tensors_only_in_one_engine_pass(tmp_path, monkeypatch):
    base = torch.randn(6, 4)
    checkpoint = {"model": {"w": base, "t": base.t(), "ids": torch.arange(5)}, "half": torch.randn(3).half(),
                  "chalf": torch.randn(3, dtype=torch.chalf), "cdouble": torch.randn(2, dtype=torch.cdouble)}
    torch.save(checkpoint, tmp_path / "ckpt.pt")
    expected = torch_reference(tmp_path / "ckpt.pt")
    passes = []
    run_table = host.run_table
    monkeypatch.setattr(host, "run_table", lambda plan, *a, **k: passes.append(plan) or run_table(plan, *a, **k))
    loaded = warpload.load_torch(tmp_path / "ckpt.pt", dtype=torch.bfloat16)
    assert len(passes) == 2  # the complex storages are read as they are, in a pass of their own
    for got, want in [(loaded["model"]["w"], expected["model"]["w"].bfloat16()),
                      (loaded["model"]["t"], expected["model"]["t"].bfloat16()),
                      (loaded["half"], expected["half"].bfloat16()), (loaded["model"]["ids"], expected["model"]["ids"]),
                      (loaded["chalf"], expected["chalf"]), (loaded["cdouble"], expected["cdouble"])]:
        assert same_bits(dense(got), dense(want)) and got.stride() == want.stride()
    assert loaded["model"]["w"].untyped_storage().data_ptr() == loaded["model"]["t"].untyped_storage().data_ptr()


def test_legacy_files_from_big_endian_machines_hold_little_endian_storages(tmp_path):
    # torch's legacy writer stores little-endian bytes everywhere (THPStorage_writeFileRaw), and its reader ignores
    # sys_info's little_endian: so does warpload.
    data = torch.arange(6, dtype=torch.float32)
    state = OrderedDict(w=tensor_v2(Storage("storage", torch.FloatStorage, "0", "cpu", 6, None), 0, (2, 3), (3, 1)))
    path = write_legacy_checkpoint(tmp_path / "be.bin", dumps(state), {"0": (6, data.numpy().tobytes())},
                                   little_endian=False)
    assert torch.equal(torch_reference(path)["w"], data.view(2, 3))
    assert_same_as_torch(warpload.load_checkpoint(path), torch_reference(path))


def test_load_torch_says_what_to_use_for_other_paths(tmp_path):
    save_file({"w": torch.ones(2)}, tmp_path / "model.safetensors")
    with pytest.raises(UnsupportedFormatError, match="a safetensors file, not a torch.save file.*load_checkpoint"):
        warpload.load_torch(tmp_path / "model.safetensors")
    with pytest.raises(IsADirectoryError, match="load_checkpoint for a checkpoint folder"):
        warpload.load_torch(tmp_path)
    with pytest.raises(FileNotFoundError):
        warpload.load_torch(tmp_path / "missing.pt")
