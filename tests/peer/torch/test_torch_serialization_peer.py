"""torch's own serialization tests, state-dict cases, run against warpload.load_torch with torch.load(weights_only=True)
as the oracle.

Ported from pytorch/pytorch test/test_serialization.py (SerializationMixin._test_serialization_data and
_test_serialization_assert, test_serialization_backwards_compat, test_save_different_dtype_unallocated,
test_safe_load_basic_types, test_serialization_new_format_old_format_compat, test_serialization_zipfile with a
non-ASCII folder, test_pathlike_serialization, test_meta_serialization, test_serialization_math_bits,
test_serialization_byteorder_mark, test_serialization_load_bom_data*, test_serialization_mmap_loading,
test_weights_only_assert, test_serialization_sparse_safe, test_lr_scheduler_serialization). Where torch's test
ships bytes written on a big-endian machine, the archive is built here from a little-endian one (to_big_endian).
"""
from __future__ import annotations

import pathlib
from collections import OrderedDict

import pytest
import torch

import warpload
from conftest import random_tensor
from torch_structures import assert_same_structure, to_big_endian, torch_reference
from warpload.errors import UnsafeCheckpointError, UnsupportedFormatError

pytestmark = pytest.mark.filterwarnings("ignore:TypedStorage is deprecated", "ignore:ComplexHalf support")

# torch's all_types_and_complex_and(torch.half, torch.bfloat16, torch.bool), plus the dtypes safetensors
# cannot name (complex32, complex128) and the float8 and unsigned types torch 2.13 saves.
ALL_DTYPES = [torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64, torch.float32, torch.float64,
              torch.complex64, torch.complex128, torch.float16, torch.bfloat16, torch.bool, torch.complex32,
              torch.uint16, torch.uint32, torch.uint64, torch.float8_e4m3fn, torch.float8_e5m2]
FORMATS = pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])


def save(obj, path, legacy=False):
    torch.save(obj, path, _use_new_zipfile_serialization=not legacy)
    return path


def serialization_data():
    """SerializationMixin._test_serialization_data: repeated tensors, storages, views of storages."""
    a = [torch.randn(5, 5).float() for _ in range(2)]
    b = [a[i % 2] for i in range(4)]
    b += [a[0].storage()]
    b += [a[0].reshape(-1)[1:4].storage()]
    b += [torch.arange(1, 11).int()]
    t1 = torch.FloatTensor().set_(a[0].reshape(-1)[1:4].clone().storage(), 0, (3,), (1,))
    t2 = torch.FloatTensor().set_(a[0].reshape(-1)[1:4].clone().storage(), 0, (3,), (1,))
    b += [(t1.storage(), t1.storage(), t2.storage())]
    b += [a[0].reshape(-1)[0:2].storage()]
    return b


@FORMATS
def test_serialization_data_matches_torch(tmp_path, legacy):
    path = save(serialization_data(), tmp_path / "data.pt", legacy)
    loaded = warpload.load_torch(path)
    assert_same_structure(loaded, torch_reference(path))
    loaded[0].fill_(10)  # _test_serialization_assert: tensors 0 and 2 are one object, and share storage 4
    assert torch.equal(loaded[0], loaded[2]) and loaded[4][0] == 10


@FORMATS
def test_old_rebuild_tensor_reduce_matches_torch(tmp_path, legacy):
    # test_serialization_backwards_compat's OldTensorV2: a strided view pickled through _rebuild_tensor.
    x = torch.randn(30).as_strided([2, 3], [9, 3], 2)

    class OldTensorV2:
        def __reduce__(self):
            return (torch._utils._rebuild_tensor, (x.storage(), x.storage_offset(), tuple(x.size()), x.stride()))

    path = save({"x": OldTensorV2()}, tmp_path / "old.pt", legacy)
    assert_same_structure(warpload.load_torch(path), torch_reference(path))


@pytest.mark.parametrize("dtype", ALL_DTYPES, ids=str)
def test_every_dtype_and_empty_views_of_other_dtypes_match_torch(tmp_path, dtype):
    # test_save_different_dtype_unallocated, and every dtype with data.
    empty = torch.tensor([], dtype=dtype)
    other = torch.TypedStorage(wrap_storage=empty.storage().untyped(), dtype=torch.float32)
    data = random_tensor((3, 4), dtype, seed=1) if dtype != torch.complex32 else torch.randn(3, 4, dtype=dtype)
    path = save({"empty": empty, "storage": other, "data": data, "slice": data[1:, ::2]}, tmp_path / "d.pt")
    assert_same_structure(warpload.load_torch(path), torch_reference(path))


def test_basic_types_match_torch(tmp_path):
    # test_safe_load_basic_types
    path = save({"int": 123, "str": "world", "float": 3.14, "bool": False}, tmp_path / "basic.pt")
    assert_same_structure(warpload.load_torch(path), torch_reference(path))


def test_new_and_old_formats_load_the_same(tmp_path):
    # test_serialization_new_format_old_format_compat
    x = [torch.ones(20, 20) for _ in range(30)]
    new = warpload.load_torch(save(x, tmp_path / "new.pt"))
    old = warpload.load_torch(save(x, tmp_path / "old.pt", legacy=True))
    assert_same_structure(new, x)
    assert_same_structure(old, new)


def test_non_ascii_folder_and_pathlike(tmp_path):
    # test_serialization_zipfile (non-ASCII path) and test_pathlike_serialization
    folder = tmp_path / "非ASCIIパス"
    folder.mkdir()
    path = pathlib.Path(save(torch.nn.Conv2d(2, 8, kernel_size=3).state_dict(), folder / "conv.pt"))
    loaded = warpload.load_torch(path)
    assert type(loaded) is OrderedDict
    assert_same_structure(loaded, torch_reference(path))


def test_meta_state_dict_matches_torch(tmp_path):
    # test_meta_serialization
    path = save(torch.nn.Conv2d(2000, 32000, kernel_size=3, device="meta").state_dict(), tmp_path / "meta.pt")
    loaded = warpload.load_torch(path)
    assert loaded["weight"].is_meta and loaded["weight"].size() == (32000, 2000, 3, 3)
    assert_same_structure(loaded, torch_reference(path))


@FORMATS
def test_math_bits_match_torch(tmp_path, legacy):
    # test_serialization_math_bits: conjugate, negative, and both
    t = torch.randn(4, dtype=torch.cfloat)
    state = {"conj": torch.conj(t), "neg": torch._neg_view(t), "neg_conj": torch._neg_view(torch.conj(t))}
    path = save(state, tmp_path / "bits.pt", legacy)
    assert_same_structure(warpload.load_torch(path), torch_reference(path))


def lstm_state():
    torch.manual_seed(0)
    return torch.nn.LSTM(3, 3).state_dict()


def test_byteorder_record_is_written_and_absent_means_little(tmp_path):
    # test_serialization_byteorder_mark, and the files saved with _disable_byteorder_record=True
    path = tmp_path / "lstm.no_bom.pt"
    torch.save(lstm_state(), path, _disable_byteorder_record=True)
    assert_same_structure(warpload.load_torch(path), torch_reference(path))


@pytest.mark.parametrize("state", [
    lstm_state,  # test_serialization_load_bom_data
    lambda: torch.randn(2, 2, dtype=torch.double),  # _double
    lambda: torch.randn(2, 2, dtype=torch.float),  # _float
    lambda: torch.randn(2, 2, dtype=torch.half),  # _half
    lambda: torch.randint(0, 255, (2, 2), dtype=torch.uint8),  # _uint8
    lambda: torch.randint(-128, 127, (2, 2), dtype=torch.int8),  # _int8
    lambda: torch.randint(-32768, 32767, (2, 2), dtype=torch.int16),  # _int16
    lambda: torch.randint(-2**31, 2**31 - 1, (2, 2), dtype=torch.int32),  # _int32
    lambda: torch.randint(-2**63, 2**63 - 1, (2, 2), dtype=torch.int64),  # _int64
    lambda: torch.randint(0, 2, (2, 2), dtype=torch.bool),  # _bool
    lambda: torch.randn(2, 2, dtype=torch.bfloat16),  # _bfloat16
    lambda: torch.randn(2, 2, dtype=torch.cdouble),  # _cdouble
    lambda: torch.randn(2, 2, dtype=torch.cfloat),  # _cfloat
    lambda: torch.randn(2, 2, dtype=torch.chalf),  # _chalf
    lambda: {dtype: random_tensor((3, 2), dtype, seed=2)[:, 1] for dtype in ALL_DTYPES if dtype != torch.complex32},
], ids=["lstm", "double", "float", "half", "uint8", "int8", "int16", "int32", "int64", "bool", "bfloat16",
        "cdouble", "cfloat", "chalf", "all_dtypes_strided"])
def test_big_endian_archives_match_torch(tmp_path, state):
    # test_serialization_load_bom_data*: an archive with byteorder 'big' loads as torch swaps it.
    original = state()
    little = save(original, tmp_path / "le.pt")
    big = tmp_path / "be.pt"
    to_big_endian(little, big)
    expected = torch_reference(big)
    assert_same_structure(expected, torch_reference(little))  # the archive is big-endian done right
    assert_same_structure(warpload.load_torch(big), expected)
    assert_same_structure(warpload.load_torch(big, zero_copy=True), expected)  # copied: swapped bytes cannot be views


@FORMATS
def test_zero_copy_matches_torch_mmap(tmp_path, legacy):
    # test_serialization_mmap_loading: a module's state dict, tensors at their offsets in the file
    module = torch.nn.Sequential(torch.nn.Linear(7, 5), torch.nn.Linear(5, 3))
    path = save(module.state_dict(), tmp_path / "m.pt", legacy)
    loaded = warpload.load_torch(path, zero_copy=True)
    assert_same_structure(loaded, torch.load(path, weights_only=True, mmap=not legacy))


def test_code_in_the_pickle_is_refused(tmp_path):
    # test_weights_only_assert
    class HelloWorld:
        def __reduce__(self):
            return (print, ("Hello World!",))

    path = save(HelloWorld(), tmp_path / "hello.pt")
    with pytest.raises(UnsafeCheckpointError, match="builtins.print"):
        warpload.load_torch(path)


@pytest.mark.parametrize("layout", ["coo", "csr"])
def test_sparse_tensors_are_refused_clearly(tmp_path, layout):
    # test_serialization_sparse_safe: torch loads them; warpload returns dense tensors only
    x = torch.zeros(3, 3)
    x[1][1] = 1
    path = save({"tensor": x.to_sparse() if layout == "coo" else x.to_sparse_csr()}, tmp_path / "sparse.pt")
    torch_reference(path)
    with pytest.raises(UnsupportedFormatError, match="torch.load"):
        warpload.load_torch(path)


def test_optimizer_and_lr_scheduler_state_match_torch(tmp_path):
    # test_lr_scheduler_serialization, with the optimizer's state next to it
    weight = torch.randn(10, 20, requires_grad=True)
    sgd = torch.optim.SGD([weight], lr=0.1, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(sgd, 6.0, total_steps=10)
    weight.sum().backward()
    sgd.step()
    scheduler.step()
    path = save({"optimizer": sgd.state_dict(), "scheduler": scheduler.state_dict()}, tmp_path / "sched.pt")
    assert_same_structure(warpload.load_torch(path), torch_reference(path))


def test_python_attributes_of_tensors_and_parameters_match_torch(tmp_path):
    # test_serialization_python_attr
    state = {}
    for name, tensor in [("tensor", torch.zeros(3, 3)), ("parameter", torch.nn.Parameter(torch.zeros(3, 3)))]:
        tensor.foo = "foo"
        tensor.pi = 3.14
        state[name] = tensor
    path = save(state, tmp_path / "attrs.pt")
    loaded, expected = warpload.load_torch(path), torch_reference(path)
    assert_same_structure(loaded, expected)
    assert [(t.foo, t.pi) for t in loaded.values()] == [(t.foo, t.pi) for t in expected.values()]
