"""warpload.safe_open against safetensors.safe_open: keys, metadata, tensors and slices."""
from __future__ import annotations

import re

import pytest
import torch
from safetensors import safe_open as st_safe_open
from safetensors.torch import save_file

import warpload
from conftest import same_bits


@pytest.fixture
def checkpoint(tmp_path):
    path = tmp_path / "m.safetensors"
    save_file({
        "matrix": torch.randn(37, 19),
        "cube": torch.arange(4 * 5 * 6, dtype=torch.int32).reshape(4, 5, 6),
        "half": torch.randn(11, dtype=torch.float16),
        "scalar": torch.tensor(2.5, dtype=torch.bfloat16),
    }, path, metadata={"format": "pt", "origin": "test"})
    return str(path)


def test_keys_order_and_metadata_match_safetensors(checkpoint):
    with st_safe_open(checkpoint, framework="pt") as expected, warpload.safe_open(checkpoint, framework="pt") as f:
        assert f.keys() == expected.keys()
        assert f.offset_keys() == expected.offset_keys()
        assert f.metadata() == expected.metadata() == {"format": "pt", "origin": "test"}


def test_metadata_is_none_when_absent(tmp_path):
    path = tmp_path / "m.safetensors"
    save_file({"a": torch.ones(1)}, path)
    with warpload.safe_open(path, framework="pt") as f:
        assert f.metadata() is None


def test_get_tensor_matches_safetensors_and_owns_its_memory(checkpoint):
    with st_safe_open(checkpoint, framework="pt") as expected, warpload.safe_open(checkpoint, framework="pt") as f:
        for name in expected.keys():
            tensor = f.get_tensor(name)
            assert same_bits(tensor, expected.get_tensor(name)), name
            assert tensor.untyped_storage().nbytes() == tensor.numel() * tensor.element_size()


SLICES = [
    ("matrix", (slice(None),)),
    ("matrix", (slice(3, 9),)),
    ("matrix", (slice(3, 9), slice(2, 5))),
    ("matrix", (slice(None), slice(-4, None))),
    ("matrix", (5,)),
    ("matrix", (Ellipsis, slice(1, 2))),
    ("cube", (slice(1, 3), slice(None), slice(2, 6))),
    ("cube", (2, slice(0, 5), 3)),
    ("half", (slice(2, 7),)),
]


@pytest.mark.parametrize("name,index", SLICES)
def test_get_slice_matches_safetensors(checkpoint, name, index):
    with st_safe_open(checkpoint, framework="pt") as expected, warpload.safe_open(checkpoint, framework="pt") as f:
        want = expected.get_slice(name)[index]
        handle = f.get_slice(name)
        got = handle[index]
        assert same_bits(got, want)
        assert got.is_contiguous()
        assert handle.get_shape() == expected.get_slice(name).get_shape()
        assert handle.get_dtype() == expected.get_slice(name).get_dtype()


def test_slices_are_copies_not_views_of_the_file(checkpoint):
    with warpload.safe_open(checkpoint, framework="pt") as f:
        first = f.get_slice("matrix")[:]
        first.zero_()
        assert f.get_slice("matrix")[:].abs().sum() > 0


def test_unknown_tensor_is_a_key_error_naming_it(checkpoint):
    with warpload.safe_open(checkpoint, framework="pt") as f:
        with pytest.raises(KeyError, match="nope"):
            f.get_tensor("nope")


def test_use_after_close_is_refused(checkpoint):
    with warpload.safe_open(checkpoint, framework="pt") as f:
        pass
    with pytest.raises(ValueError, match="closed"):
        f.get_tensor("matrix")


def test_other_frameworks_are_refused_with_advice(checkpoint):
    for framework in ("tf", "flax", "jax", "mlx", "paddle"):
        with pytest.raises(ValueError, match="framework='pt'.*framework='np'"):
            warpload.safe_open(checkpoint, framework=framework)


@pytest.mark.parametrize("framework", ["pt", "np"])
def test_slices_refuse_what_safetensors_refuses_with_its_words(tmp_path, framework):
    import safetensors

    from warpload.errors import SliceError

    path = tmp_path / "a.safetensors"
    tensor = torch.arange(50, dtype=torch.float32).reshape(10, 5)
    save_file({"a": tensor}, str(path))
    with warpload.safe_open(path, framework=framework) as handle:
        piece = handle.get_slice("a")
        for index, message in [
            ((slice(2, None), -6), "Invalid index -6 for dimension 1 of size 5"),
            ([0, 1], "Non empty lists are not implemented"),
            ((slice(2, None), 20), "Error during slicing [2:, 20] with shape [10, 5]: index 20 out of bounds for "
                                   "tensor dimension #1 of size 5"),
            (slice(None, 20), "Error during slicing [:20] with shape [10, 5]: index 19 out of bounds for tensor "
                              "dimension #0 of size 10"),
            ((0, 0, 0), "more slicing indexes than dimensions in tensor"),
        ]:
            with pytest.raises(SliceError, match=re.escape(message)) as caught:
                piece[index]
            assert isinstance(caught.value, (IndexError, safetensors.SafetensorError))
        # What safetensors takes comes back as torch and numpy index it; a step is honoured.
        assert list(piece[2:, -5].shape) == [8] and list(piece[[]].shape) == [0, 5]
        assert piece[::3, 1].tolist() == tensor[::3, 1].tolist()
