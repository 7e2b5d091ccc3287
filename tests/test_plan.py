"""Load plans: storages shared by several tensors (strided views, tied weights) load once and stay shared."""
from __future__ import annotations

import pytest
import torch

from conftest import random_tensor, same_bits
from warpload import constants, engine
from warpload._native import core
from warpload.plan import TensorRecord, plan_load


def test_views_of_one_storage_share_it_and_match_torch(tmp_path):
    base = torch.arange(24, dtype=torch.float32)
    path = tmp_path / "storage.bin"
    path.write_bytes(b"\x00" * 16 + base.numpy().tobytes())
    common = dict(dtype="F32", path=str(path), offset=16, nbytes=96)
    records = [
        TensorRecord("matrix", shape=(4, 6), **common),
        TensorRecord("transposed", shape=(6, 4), stride=(1, 6), **common),
        TensorRecord("row2", shape=(6,), stride=(1,), storage_offset=12, **common),
        TensorRecord("tied", shape=(4, 6), stride=(6, 1), **common),
    ]
    plan = plan_load(records)
    assert len(plan.storages) == 1
    for dtype in (None, "BF16"):
        plan = plan_load(records, dtype)
        loaded = engine.materialize(plan)
        expected = base.to(torch.bfloat16) if dtype else base
        assert same_bits(loaded["matrix"], expected.view(4, 6))
        assert same_bits(loaded["transposed"].contiguous(), expected.view(4, 6).t().contiguous())
        assert loaded["transposed"].stride() == (1, 6)
        assert same_bits(loaded["row2"], expected[12:18])
        storages = {loaded[name].untyped_storage().data_ptr() for name in loaded}
        assert len(storages) == 1
    loaded["matrix"][0, 0] = 100.0
    assert loaded["tied"][0, 0] == 100.0, "tied tensors alias one storage, as torch.load returns them"


def test_storages_are_laid_out_in_file_order_and_aligned(tmp_path):
    path = str(tmp_path / "f")
    records = [TensorRecord("b", "U8", (3,), path, 100, 3), TensorRecord("a", "F32", (2,), path, 8, 8)]
    plan = plan_load(records)
    assert [t.name for t in plan.tensors] == ["a", "b"]
    assert [s.dst_offset % 64 for s in plan.storages] == [0, 0]
    assert plan.total_nbytes == 128


@pytest.mark.parametrize("source", ["F32", "BF16", "U8", "F64"])
@pytest.mark.parametrize("target", [None, "F16"])
@pytest.mark.parametrize("rows,cols", [(1, 1), (3, 5), (70, 33), (1, 3000), (2049, 7)])
def test_transposed_records_match_tensor_t(tmp_path, monkeypatch, source, target, rows, cols):
    from warpload.dtypes import torch_dtype

    monkeypatch.setenv("WARPLOAD_NUM_THREADS", "3")
    stored = random_tensor((rows, cols), torch_dtype(source), seed=rows * cols)
    if stored.is_floating_point():
        stored = torch.nan_to_num(stored)
    path = tmp_path / "matrix.bin"
    path.write_bytes(b"\x01" * 5 + stored.contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    record = TensorRecord("w", source, (cols, rows), str(path), 5, stored.numel() * stored.element_size(),
                          transpose=True)
    loaded = engine.materialize(plan_load([record], target))["w"]
    expected = stored.t().contiguous()
    if target and stored.is_floating_point():
        expected = expected.to(torch_dtype(target))
    assert same_bits(loaded, expected)


def test_only_plain_matrices_can_be_transposed():
    with pytest.raises(ValueError, match="2-D"):
        TensorRecord("w", "F32", (2, 3, 4), "f", 0, 96, transpose=True)



def _run(plan, regions, destinations, padded=()) -> dict[str, int]:
    """Runs plan into regions through the engine; returns its counters (copies after coalescing)."""
    return core().execute(engine.open_files(plan.paths), engine.plan_table(plan, destinations), regions,
                                 warm_fraction=constants.MAP_WARM_FRACTION,
                                 coalesce_gap=constants.MIRRORED_GAP_MAX_BYTES, padded=list(padded))


@pytest.mark.parametrize("dtype", [None, "BF16"])
def test_storages_back_to_back_in_file_and_memory_share_one_copy(tmp_path, dtype):
    # Three F32 storages back to back in the file (128 bytes each, 64 as BF16: no alignment gap in memory),
    # then an I64 one: the F32 ones merge; the I64 one (another dtype code) and a transposed one are copies
    # of their own.
    path = tmp_path / "f"
    data = random_tensor((612,), torch.uint8)
    path.write_bytes(data.numpy().tobytes())
    records = [TensorRecord(f"w{i}", "F32", (32,), str(path), 100 + 128 * i, 128) for i in range(3)]
    records += [TensorRecord("i", "I64", (8,), str(path), 484, 64),
                TensorRecord("t", "F32", (4, 4), str(path), 548, 64, transpose=True)]
    plan = plan_load(records, dtype)
    buffer = bytearray(plan.total_nbytes)
    assert plan_table_rows(plan) == 5  # one row per storage: the engine merges them
    assert _run(plan, [buffer], [(0, s.dst_offset) for s in plan.storages])["copies"] == 3
    loaded = engine.materialize(plan)
    for storage, tensor in zip(plan.storages, ("w0", "w1", "w2", "i", "t")):
        expected = loaded[tensor].contiguous().view(-1).view(torch.uint8).numpy().tobytes()
        assert buffer[storage.dst_offset:storage.dst_offset + len(expected)] == expected
    # Destinations that are not back to back keep their copies.
    regions = [bytearray(s.dst_nbytes) for s in plan.storages]
    assert _run(plan, regions, [(i, 0) for i in range(5)])["copies"] == 5


def plan_table_rows(plan) -> int:
    return len(engine.plan_table(plan, [(0, s.dst_offset) for s in plan.storages])) // 10


@pytest.mark.parametrize("dtype, copies", [(None, 1), ("BF16", 2)])
def test_gaps_between_storages_are_mirrored_so_one_copy_does_both(tmp_path, dtype, copies):
    # Two storages 128 bytes apart in the file (a zip local header between them), as torch.save writes them.
    path = tmp_path / "f"
    path.write_bytes(bytes(range(256)) * 2)
    records = [TensorRecord("a", "F32", (16,), str(path), 64, 64), TensorRecord("b", "F32", (16,), str(path), 256, 64)]
    plan = plan_load(records, dtype)
    if dtype is None:
        assert plan.storages[1].dst_offset - plan.storages[0].dst_offset == 192
    destinations = [(0, s.dst_offset) for s in plan.storages]
    assert _run(plan, [bytearray(plan.total_nbytes)], destinations, padded=[0])["copies"] == copies
    # Memory the caller owns may hold something else between its tensors: no gap is copied into it.
    buffer = bytearray(b"\x5a" * plan.total_nbytes)
    assert _run(plan, [buffer], destinations)["copies"] == 2
    end = plan.storages[0].dst_offset + plan.storages[0].dst_nbytes
    assert buffer[end:plan.storages[1].dst_offset] == b"\x5a" * (plan.storages[1].dst_offset - end)
