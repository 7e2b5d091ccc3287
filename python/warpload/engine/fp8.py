"""FP8 checkpoints (float8 weights with `weight_scale_inv` scale grids, as DeepSeek-V3 and Qwen3-FP8 ship them)
dequantized by the engine straight into parameters: float32(weight) * scale, rounded once to the parameter's
dtype, exactly as transformers' Fp8Dequantize computes it, in parallel and without a float32 copy of the model."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Mapping, Optional

from .. import constants
from .._native import core
from ..dtypes import DTYPES, dtype_name
from ..errors import CheckpointError
from ..plan import TensorRecord, plan_load
from .host import materialize, tensor_region

if TYPE_CHECKING:
    import numpy
    import torch

    Fill = Callable[[Mapping[str, "torch.Tensor"], Mapping[str, TensorRecord]], Optional[Mapping[str, Any]]]

SCALE_SUFFIX = "_scale_inv"  # "x.weight" is scaled by "x.weight_scale_inv"
FP8_DTYPES = ("F8_E4M3", "F8_E5M2")
DEQUANTIZED_TO = ("F32", "F16", "BF16")


def scale_grid(scales: "torch.Tensor") -> tuple["numpy.ndarray", int, int]:
    """The float32 scales and their (rows, cols) grid, as transformers reads them: a 0-d or 1-d tensor is one
    scale for the whole matrix; uint8 scales are E8M0 exponents, 2 ** (byte - 127)."""
    import torch

    if scales.dtype == torch.uint8:
        values = (scales.to(torch.float32) - 127.0).exp2()
    else:
        values = scales.to(torch.float32)
    rows, cols = (1, 1) if values.dim() < 2 else tuple(values.shape[-2:])
    return values.contiguous().numpy().reshape(-1), int(rows), int(cols)


def _checked_matrix(record: TensorRecord, grid: tuple[Any, int, int], target: "torch.Tensor") -> tuple:
    values, scale_rows, scale_cols = grid
    if record.dtype not in FP8_DTYPES or len(record.shape) != 2:
        raise CheckpointError(f"{record.path}: tensor {record.name!r} has a {SCALE_SUFFIX} scale but is "
                              f"{record.dtype} {list(record.shape)}, not a 2-D float8 matrix", path=record.path,
                              tensor=record.name, offset=record.offset)
    rows, cols = record.shape
    if values.size != scale_rows * scale_cols or rows % scale_rows or cols % scale_cols:
        raise CheckpointError(f"{record.path}: tensor {record.name!r}: weight shape ({rows}, {cols}) not divisible "
                              f"by scale grid ({scale_rows}, {scale_cols})", path=record.path, tensor=record.name)
    if dtype_name(target.dtype) not in DEQUANTIZED_TO or tuple(target.shape) != (rows, cols):
        raise CheckpointError(f"{record.path}: tensor {record.name!r} dequantizes to {rows} x {cols} floats, its "
                              f"parameter is {target.dtype} {list(target.shape)}", path=record.path,
                              tensor=record.name)
    return rows, cols, scale_rows, scale_cols


def dequantize_into(targets: Mapping[str, "torch.Tensor"], weights: Mapping[str, TensorRecord],
                    scales: Mapping[str, "torch.Tensor"]) -> None:
    """Writes each weights[key] (float8, in its file), scaled by scales[key], into targets[key] (F32, F16 or
    BF16, on any device: a GPU target is dequantized on the host and copied). One engine call for all of them."""
    import torch

    files = {path: core().File(path) for path in {record.path for record in weights.values()}}
    views = {path: memoryview(file) for path, file in files.items()}
    matrices, copies = [], []
    for key, record in weights.items():
        target = targets[key]
        grid = scale_grid(scales[key])
        rows, cols, scale_rows, scale_cols = _checked_matrix(record, grid, target)
        host = target if target.device.type == "cpu" and target.is_contiguous() else torch.empty(
            target.shape, dtype=target.dtype)
        if host is not target:
            copies.append((target, host))
        source = views[record.path][record.offset:record.offset + record.nbytes]
        matrices.append((source, grid[0], rows, cols, scale_rows, scale_cols, DTYPES[record.dtype].engine_code,
                         tensor_region(host), DTYPES[dtype_name(host.dtype)].engine_code))
    core().dequantize_fp8(matrices, num_threads=constants.num_threads())
    for target, host in copies:
        target.copy_(host)


def split_scales(records: Mapping[str, TensorRecord]) -> tuple[dict[str, TensorRecord], dict[str, TensorRecord]]:
    """(the records without the FP8 scales and activation scales, {weight name: its scale record})."""
    scale_of = {name[:-len(SCALE_SUFFIX)]: record for name, record in records.items() if name.endswith(SCALE_SUFFIX)}
    kept = {name: record for name, record in records.items()
            if not name.endswith((SCALE_SUFFIX, ".activation_scale", ".input_scale"))}
    return kept, {name: record for name, record in scale_of.items() if name in kept}


def dequantizing_fill(fill: "Fill", scale_records: Mapping[str, TensorRecord]) -> "Fill":
    """`fill` for every record but the scaled float8 weights, which are dequantized into their targets."""

    def fill_with_dequantization(targets: Mapping[str, "torch.Tensor"],
                                 records: Mapping[str, TensorRecord]) -> Optional[Mapping[str, Any]]:
        scaled = {key for key, record in records.items() if record.name in scale_records}
        scales: dict[str, "torch.Tensor"] = {}
        if scaled:
            wanted = [scale_records[records[key].name] for key in scaled]
            loaded = materialize(plan_load(wanted))
            scales = {key: loaded[scale_records[records[key].name].name] for key in scaled}
            dequantize_into({key: targets[key] for key in scaled}, {key: records[key] for key in scaled}, scales)
        rest = {key: record for key, record in records.items() if key not in scaled}
        return fill({key: targets[key] for key in rest}, rest) if rest else None

    return fill_with_dequantization
