"""warpload.load_file against safetensors.torch.load_file: every dtype, shape, order, conversion."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file as st_load_file
from safetensors.torch import save_file

import warpload
from conftest import SAVEABLE_DTYPES, assert_same_state, random_tensor, same_bits
from warpload.errors import CheckpointNotFoundError, UnsupportedDtypeError

SHAPES = [(), (0,), (3, 0, 2), (1,), (7,), (5, 3), (2, 3, 5, 7), (1025, 33)]
FLOATS = [torch.float64, torch.float32, torch.float16, torch.bfloat16, torch.float8_e4m3fn, torch.float8_e5m2]
TARGETS = [torch.float64, torch.float32, torch.float16, torch.bfloat16]


@pytest.fixture
def every_dtype_file(tmp_path):
    tensors = {f"{dtype}-{i}": random_tensor(shape, dtype, seed=i)
               for dtype in SAVEABLE_DTYPES for i, shape in enumerate(SHAPES)}
    path = tmp_path / "all.safetensors"
    save_file(tensors, path, metadata={"format": "pt", "note": "every dtype"})
    return str(path)


@pytest.mark.parametrize("zero_copy", [False, True])
def test_every_dtype_and_shape_is_bit_identical_to_safetensors(every_dtype_file, zero_copy):
    expected = st_load_file(every_dtype_file)
    loaded = warpload.load_file(every_dtype_file, zero_copy=zero_copy)
    assert_same_state(loaded, expected)


def test_owned_tensors_have_separate_storages_and_survive_the_file(tmp_path):
    path = tmp_path / "m.safetensors"
    save_file({"a": torch.arange(10.0), "b": torch.ones(4, 4)}, path)
    loaded = warpload.load_file(path)
    path.unlink()
    assert loaded["a"].untyped_storage().data_ptr() != loaded["b"].untyped_storage().data_ptr()
    assert loaded["a"].untyped_storage().nbytes() == 40
    loaded["a"] += 1
    assert torch.equal(loaded["a"], torch.arange(1.0, 11.0))


def test_zero_copy_tensors_are_writable_without_changing_the_file(tmp_path):
    path = tmp_path / "m.safetensors"
    save_file({"a": torch.arange(8.0)}, path)
    before = path.read_bytes()
    view = warpload.load_file(path, zero_copy=True)["a"]
    view.mul_(2)
    assert torch.equal(view, torch.arange(8.0) * 2)
    assert path.read_bytes() == before


def test_zero_copy_refuses_dtype_conversion(tmp_path):
    path = tmp_path / "m.safetensors"
    save_file({"a": torch.arange(8.0)}, path)
    with pytest.raises(ValueError, match="zero_copy"):
        warpload.load_file(path, zero_copy=True, dtype=torch.float16)


@pytest.mark.parametrize("source", FLOATS)
@pytest.mark.parametrize("target", TARGETS)
def test_dtype_conversion_matches_tensor_to(tmp_path, source, target):
    tensor = random_tensor((4097,), source, seed=3)
    path = tmp_path / "m.safetensors"
    save_file({"w": tensor, "ids": torch.arange(5)}, path)
    loaded = warpload.load_file(path, dtype=target)
    assert same_bits(loaded["w"], tensor.to(target))
    assert same_bits(loaded["ids"], torch.arange(5)), "integer tensors keep their dtype"


@pytest.mark.parametrize("spelling", [torch.bfloat16, "bfloat16", "torch.bfloat16", "BF16"])
def test_dtype_accepts_torch_dtypes_and_strings(tmp_path, spelling):
    path = tmp_path / "m.safetensors"
    save_file({"w": torch.randn(10)}, path)
    assert warpload.load_file(path, dtype=spelling)["w"].dtype == torch.bfloat16


def test_unknown_dtype_spelling_is_rejected(tmp_path):
    path = tmp_path / "m.safetensors"
    save_file({"w": torch.randn(10)}, path)
    with pytest.raises(UnsupportedDtypeError, match="float33"):
        warpload.load_file(path, dtype="float33")


def test_conversion_to_float8_is_refused_with_advice(tmp_path):
    path = tmp_path / "m.safetensors"
    save_file({"w": torch.randn(10)}, path)
    with pytest.raises(UnsupportedDtypeError, match="Tensor.to"):
        warpload.load_file(path, dtype=torch.float8_e4m3fn)


def test_f4_packs_two_values_per_byte_like_safetensors(write_raw):
    path = write_raw({"x": {"dtype": "F4", "shape": [2, 4], "data_offsets": [0, 4]}}, b"\x12\x34\x56\x78")
    expected = st_load_file(path)["x"]
    loaded = warpload.load_file(path)["x"]
    assert loaded.shape == expected.shape == (2, 2)
    assert same_bits(loaded, expected)


def test_f6_has_no_torch_dtype_and_says_so(write_raw):
    path = write_raw({"x": {"dtype": "F6_E2M3", "shape": [4], "data_offsets": [0, 3]}}, b"\x12\x34\x56")
    with pytest.raises(UnsupportedDtypeError, match="F6_E2M3"):
        warpload.load_file(path)


def test_unaligned_tensors_from_old_writers_load_correctly(write_raw):
    # Before safetensors 0.3 tensors were not aligned: a float32 may start at an odd offset.
    values = torch.arange(6, dtype=torch.float32)
    header = {"b": {"dtype": "U8", "shape": [3], "data_offsets": [0, 3]},
              "a": {"dtype": "F32", "shape": [6], "data_offsets": [3, 27]}}
    path = write_raw(header, b"\x01\x02\x03" + values.numpy().tobytes(), pad_to=1)
    for zero_copy in (False, True):
        loaded = warpload.load_file(path, zero_copy=zero_copy)
        assert torch.equal(loaded["a"], values)
        assert torch.equal(loaded["b"], torch.tensor([1, 2, 3], dtype=torch.uint8))


def test_missing_file_raises_not_found(tmp_path):
    with pytest.raises(CheckpointNotFoundError):
        warpload.load_file(tmp_path / "absent.safetensors")
    with pytest.raises(FileNotFoundError):
        warpload.load_file(tmp_path / "absent.safetensors")


def test_directory_is_refused_with_advice(tmp_path):
    with pytest.raises(IsADirectoryError, match="load_checkpoint"):
        warpload.load_file(tmp_path)


def test_empty_file_of_no_tensors(write_raw):
    path = write_raw({}, b"")
    assert warpload.load_file(path) == {} == st_load_file(path)


def test_non_cpu_device_string_is_validated(tmp_path):
    path = tmp_path / "m.safetensors"
    save_file({"w": torch.randn(3)}, path)
    with pytest.raises(RuntimeError):
        warpload.load_file(path, device="nosuchdevice")
