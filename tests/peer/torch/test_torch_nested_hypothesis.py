"""Property: random nested structures of tensors and primitives, saved by torch.save, load through warpload.load_torch
exactly as torch.load(weights_only=True) loads them (types, values, sharing), in both formats and both byte orders."""
from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import warpload
from conftest import random_tensor
from torch_structures import assert_same_structure, to_big_endian, torch_reference

DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64, torch.int64, torch.int32, torch.int16,
          torch.uint8, torch.bool, torch.complex64, torch.complex128]
# Non-empty bytes: torch.save pickles b"" as a call of builtins.bytes, which torch's weights-only load refuses.
PRIMITIVES = st.one_of(st.integers(-2**63, 2**63 - 1), st.floats(allow_nan=False), st.text(max_size=8),
                       st.binary(min_size=1, max_size=8), st.booleans(), st.none(), st.sampled_from(DTYPES),
                       st.lists(st.integers(0, 9), max_size=3).map(torch.Size),
                       st.sampled_from([torch.device("cpu"), torch.device("cuda", 1)]))


def tensor_pool(data) -> list[torch.Tensor]:
    """A few storages, and views of them the ways checkpoints hold them: whole, sliced, transposed, repeated."""
    pool = []
    for seed in range(data.draw(st.integers(1, 3))):
        dtype = data.draw(st.sampled_from(DTYPES))
        base = random_tensor((data.draw(st.integers(1, 5)), data.draw(st.integers(1, 5))), dtype, seed=seed)
        pool += [base, base[1:], base.t(), base[:, :1], base.reshape(-1)[::2]]
    return pool


def structure(data, pool: list, depth: int):
    kind = data.draw(st.sampled_from(["tensor", "primitive"] + (["dict", "ordered", "list", "tuple"] if depth else [])))
    if kind == "tensor":
        return pool[data.draw(st.integers(0, len(pool) - 1))]
    if kind == "primitive":
        return data.draw(PRIMITIVES)
    items = [structure(data, pool, depth - 1) for _ in range(data.draw(st.integers(0, 3)))]
    if kind in ("dict", "ordered"):
        keys = data.draw(st.lists(st.text(max_size=6), min_size=len(items), max_size=len(items), unique=True))
        return (dict if kind == "dict" else OrderedDict)(zip(keys, items))
    return items if kind == "list" else tuple(items)


@pytest.mark.filterwarnings("ignore:TypedStorage is deprecated")
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), layout=st.sampled_from(["zip", "legacy", "big-endian"]))
def test_random_nested_structures_load_as_torch_loads_them(tmp_path, data, layout):
    pool = tensor_pool(data)
    obj = {"model": structure(data, pool, 3), "optimizer": structure(data, pool, 3), "step": data.draw(PRIMITIVES)}
    path = tmp_path / "checkpoint.pt"
    torch.save(obj, path, _use_new_zipfile_serialization=layout != "legacy")
    if layout == "big-endian":
        to_big_endian(path, tmp_path / "be.pt")
        path = tmp_path / "be.pt"
    expected = torch_reference(path)
    assert_same_structure(warpload.load_torch(path), expected)
    assert_same_structure(warpload.load_checkpoint(path), expected)
