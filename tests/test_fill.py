"""fill.fill_parameters: checkpoint records copied straight into preallocated tensors, in windows, views included."""
from __future__ import annotations

import os

import pytest
import torch
from safetensors.torch import save_file

from conftest import random_tensor, same_bits
from warpload.dtypes import torch_dtype
from warpload.engine import fill, host, host_fill
from warpload.formats.checkpoint import checkpoint_records


def records_of(path):
    return {record.name: record for record in checkpoint_records(os.fspath(path))}


def empty_like_records(records):
    return {name: torch.empty(record.shape, dtype=torch_dtype(record.dtype)) for name, record in records.items()}


@pytest.fixture
def safetensors_file(tmp_path):
    tensors = {"a": torch.randn(300, 70), "b": torch.randn(5), "ids": torch.arange(11), "empty": torch.zeros(0, 3)}
    path = tmp_path / "model.safetensors"
    save_file(tensors, os.fspath(path))
    return path, tensors


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_converts_into_the_targets_like_torch(safetensors_file, dtype):
    path, tensors = safetensors_file
    records = records_of(path)
    targets = {name: torch.empty(t.shape, dtype=dtype if t.is_floating_point() else t.dtype)
               for name, t in tensors.items()}
    addresses = {name: t.data_ptr() for name, t in targets.items()}
    fill.fill_parameters(targets, records)
    for name, tensor in tensors.items():
        expected = tensor.to(dtype) if tensor.is_floating_point() else tensor
        assert same_bits(targets[name], expected), name
        assert targets[name].data_ptr() == addresses[name]  # filled in place, never replaced


def test_small_windows_split_tensors_and_give_the_same_bytes(safetensors_file, monkeypatch):
    path, tensors = safetensors_file
    monkeypatch.setattr(host_fill, "WINDOW_MIN_BYTES", 4096)
    monkeypatch.setattr(host_fill, "WINDOW_BYTES_PER_THREAD", 0)
    calls = []
    run_table = host.run_table
    monkeypatch.setattr(host, "run_table", lambda plan, *a, **k: calls.append(plan) or run_table(plan, *a, **k))
    records = records_of(path)
    targets = empty_like_records(records)
    fill.fill_parameters(targets, records)
    assert len(calls) > 20  # "a" alone is 84000 bytes
    assert max(plan.total_nbytes for plan in calls) <= 4096 + 64
    for name, tensor in tensors.items():
        assert same_bits(targets[name], tensor), name


def test_views_of_a_shared_bin_storage_are_copied_from_its_owner(tmp_path):
    base = random_tensor((6, 8), torch.float32, seed=3)
    state = {"whole": base, "tied": base, "row": base[2], "transposed": base.t(), "slice": base[1:4, 2:5]}
    path = tmp_path / "pytorch_model.bin"
    torch.save(state, path)
    records = records_of(path)
    targets = {name: torch.empty(tensor.shape, dtype=torch.bfloat16) for name, tensor in state.items()}
    fill.fill_parameters(targets, records)
    for name, tensor in state.items():
        assert same_bits(targets[name], tensor.to(torch.bfloat16)), name


def test_a_storage_no_tensor_covers_is_loaded_then_copied(tmp_path):
    base = random_tensor((10,), torch.float32, seed=4)
    state = {"head": base[:4], "tail": base[6:]}
    path = tmp_path / "pytorch_model.bin"
    torch.save(state, path)
    records = records_of(path)
    targets = {name: torch.empty(tensor.shape) for name, tensor in state.items()}
    fill.fill_parameters(targets, records)
    for name, tensor in state.items():
        assert same_bits(targets[name], tensor), name


def test_a_target_the_engine_cannot_convert_to_is_filled_by_a_casting_copy(safetensors_file):
    path, tensors = safetensors_file
    records = records_of(path)
    targets = {"b": torch.empty(5, dtype=torch.int64), "ids": torch.empty(11, dtype=torch.float32)}
    fill.fill_parameters(targets, {"b": records["b"], "ids": records["ids"]})
    assert same_bits(targets["b"], tensors["b"].to(torch.int64))
    assert same_bits(targets["ids"], tensors["ids"].to(torch.float32))
