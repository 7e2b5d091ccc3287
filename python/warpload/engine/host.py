"""Runs load plans through the C++ engine and wraps the bytes it wrote as torch tensors."""
from __future__ import annotations

import sys
import threading
from array import array
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Optional, Sequence

from .. import constants
from .._native import core
from ..dtypes import DTYPES, copy_code, torch_dtype
from ..errors import DestinationError
from ..plan import LoadPlan
from . import machine as system
from .progress import current_counter

if TYPE_CHECKING:
    import torch


def open_files(paths: Sequence[str]) -> list:
    return [core().File(path) for path in paths]


def storage_tensors(buffers: Sequence[Any], offsets: Sequence[int], dtypes: Sequence[str],
                    numels: Sequence[int]) -> list["torch.Tensor"]:
    """1-D tensors over buffers[i][offsets[i]:], numels[i] elements of dtypes[i] each, keeping their buffers
    alive; they own no copy of the bytes."""
    import torch

    tensors = []
    torch_types = {dtype: torch_dtype(dtype) for dtype in set(dtypes)}
    for buffer, offset, dtype, numel in zip(buffers, offsets, dtypes, numels):
        torch_type = torch_types[dtype]
        count = numel // 2 if dtype == "F4" else numel  # torch_shape of (numel,)
        if count == 0:
            tensors.append(torch.empty(0, dtype=torch_type))
        else:
            tensors.append(torch.frombuffer(buffer, dtype=torch_type, count=count, offset=offset))
    return tensors


def wrap_tensors(plan: LoadPlan, storage_views: Sequence["torch.Tensor"]) -> dict[str, "torch.Tensor"]:
    """Each planned tensor as a view of its storage (a 1-D tensor); tensors of one storage share it, as
    torch.load gives. A storage's first 1-D tensor is the storage tensor itself: on 6,004 small tensors, a
    view per tensor costs 10 ms."""
    tensors = {}
    used = [False] * len(storage_views)
    for planned in plan.tensors:
        record = planned.record
        storage = storage_views[planned.storage]
        if record.is_storage_view:
            stride = record.stride if record.stride is not None else contiguous_stride(record.shape)
            tensors[record.name] = storage.as_strided(record.shape, stride, record.storage_offset)
            continue
        shape = torch_shape(record.dtype, record.shape)
        if len(shape) == 1 and not used[planned.storage]:
            tensors[record.name] = storage
        else:
            tensors[record.name] = storage.view(shape)
        used[planned.storage] = True
    return tensors


def torch_shape(dtype: str, shape: tuple[int, ...]) -> tuple[int, ...]:
    """The torch shape of a tensor: F4 packs two values per byte, and headers count logical values
    (formats.md 1.4), so the last dimension halves."""
    return shape[:-1] + (shape[-1] // 2,) if dtype == "F4" else shape


def contiguous_stride(shape: tuple[int, ...]) -> tuple[int, ...]:
    stride, step = [], 1
    for dim in reversed(shape):
        stride.append(step)
        step *= max(dim, 1)
    return tuple(reversed(stride))


def plan_table(plan: LoadPlan, destinations: Sequence[tuple[int, int]]) -> array:
    """The engine's int64 row table, one row per storage: file, src offset, src bytes, src dtype,
    destination region, offset in that region, dst dtype, the (rows, cols) of a matrix to transpose
    while copying ((0, 0) for a plain copy), and the bytes of each big-endian unit to reverse (0: none).

    destinations[i] is (region index, byte offset) where storage i goes, in the regions passed with the
    table; the engine checks that each storage fits there, in its planned dtype, before copying any, and
    merges rows one copy can do (csrc/engine.h, coalesce).
    """
    if len(destinations) != len(plan.storages):
        raise ValueError(f"{len(destinations)} destinations for {len(plan.storages)} storages")
    file_index = {path: i for i, path in enumerate(plan.paths)}
    codes = {(s.source_dtype, s.dtype): _engine_codes(s.source_dtype, s.dtype) for s in plan.storages}
    cells: list[int] = []
    for storage, (region, offset) in zip(plan.storages, destinations):
        source_code, target_code = codes[storage.source_dtype, storage.dtype]
        cells += (file_index[storage.path], storage.offset, storage.nbytes, source_code, region, offset, target_code,
                  *(storage.transposed_from or (0, 0)), storage.byteswap)
    return array("q", cells)


def tensor_region(tensor: "torch.Tensor") -> tuple[int, int]:
    """A contiguous tensor's bytes as an engine destination region, (address, nbytes), on any device.

    A pair rather than a buffer: torch tensors do not export the buffer protocol, and a numpy view of
    each costs ~6 us, 36 ms over the 6,000 parameters of a large model, against under 1 us.
    """
    if not tensor.is_contiguous():
        raise ValueError(f"the engine writes contiguous tensors only, not one of shape {tuple(tensor.shape)} "
                         f"and stride {tensor.stride()}")
    return tensor.data_ptr(), tensor.nbytes


@contextmanager
def naming_tensors(plan: LoadPlan) -> Iterator[None]:
    """Adds the tensor's name to a DestinationError the engine raises for a row of plan_table(plan, ...)."""
    try:
        yield
    except DestinationError as err:
        storage = plan.storages[err.row]
        name = next((t.name for t in plan.tensors if (t.record.path, t.record.offset, t.record.nbytes)
                     == (storage.path, storage.offset, storage.nbytes)), None)
        if name is None:
            raise
        raise DestinationError(f"tensor {name!r}: {err}", row=err.row, region=err.region, offset=err.offset,
                               nbytes=err.nbytes, region_size=err.region_size, path=err.path, tensor=name) from err


def _engine_codes(source_dtype: str, dtype: str) -> tuple[int, int]:
    """The engine's (source, destination) dtype codes: a conversion's, or a plain copy of the source's width."""
    if source_dtype != dtype:
        return DTYPES[source_dtype].engine_code, DTYPES[dtype].engine_code
    code = copy_code(source_dtype)
    return code, code


def run_table(plan: LoadPlan, regions: Sequence[Any], destinations: Sequence[tuple[int, int]],
              files: Optional[Sequence[Any]] = None, *, padded: Sequence[int] = ()) -> None:
    """Copies every storage of the plan to its destination, in parallel with the GIL released.

    destinations[i] is (region index, byte offset) of storage i in `regions`: writable buffers (a
    HostBuffer) or (address, nbytes) pairs (tensor_region). The regions listed in `padded` hold only the
    plan's storages and padding (a plan's own buffer), so the engine may also copy a file's bytes between
    two storages into them, doing both with one copy.

    Raises CheckpointError for a plan that reads outside its files, DestinationError for one that would
    write outside its regions (before any byte moves), EngineIOError for a failed read.
    """
    if files is None:
        files = open_files(plan.paths)
    with naming_tensors(plan):
        core().execute(list(files), plan_table(plan, destinations), list(regions),
                       warm_fraction=constants.MAP_WARM_FRACTION, coalesce_gap=constants.MIRRORED_GAP_MAX_BYTES,
                       padded=list(padded), method=constants.read_method(), num_threads=constants.num_threads(),
                       huge_pages=system.use_huge_pages(), progress=current_counter())


def execute(plan: LoadPlan, files: Optional[Sequence[Any]] = None) -> Any:
    """Runs a plan into a fresh huge-page buffer (laid out by the plan) and returns the buffer."""
    buffer = core().HostBuffer(plan.total_nbytes, system.use_huge_pages())
    run_table(plan, [buffer], [(0, storage.dst_offset) for storage in plan.storages], files, padded=[0])
    return buffer


def execute_while_importing_torch(plan: LoadPlan, files: Optional[Sequence[Any]] = None) -> Any:
    """execute(), overlapped with the first `import torch` of the process when there is one.

    On a cold start importing torch takes about a second, longer than loading a 1 GB file; the
    engine releases the GIL, so both proceed at once.
    """
    if "torch" in sys.modules:
        return execute(plan, files)
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["buffer"] = execute(plan, files)
        except BaseException as err:  # re-raised in the caller's thread below
            outcome["error"] = err

    worker = threading.Thread(target=run, name="warpload-load", daemon=True)
    worker.start()
    import torch  # noqa: F401  (the import is the point)

    worker.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["buffer"]


def materialize(plan: LoadPlan, device: Any = "cpu",
                files: Optional[Sequence[Any]] = None) -> dict[str, "torch.Tensor"]:
    """Loads every tensor of the plan into memory it owns (one host buffer), then moves them to `device`
    (the host backend; devices.materialize picks the backend for a device)."""
    buffer = execute_while_importing_torch(plan, files)
    import torch

    # frombuffer reads a memoryview's buffer in half the time it takes to ask the HostBuffer itself.
    view = memoryview(buffer)
    storages = storage_tensors([view] * len(plan.storages), [s.dst_offset for s in plan.storages],
                               [s.dtype for s in plan.storages], [s.numel for s in plan.storages])
    target = torch.device(device)
    if target.type != "cpu":
        # Storages move, then views are rebuilt on the device, so tied tensors stay tied there.
        storages = [storage.to(target) for storage in storages]
    return wrap_tensors(plan, storages)


def zero_copy_views(plan: LoadPlan, files: Mapping[str, Any]) -> dict[str, "torch.Tensor"]:
    """Tensors that view the mapped files directly: no copy, pages are read when first touched."""
    views = {path: memoryview(file) for path, file in files.items()}
    storages = storage_tensors([views[s.path] for s in plan.storages], [s.offset for s in plan.storages],
                               [s.source_dtype for s in plan.storages], [s.numel for s in plan.storages])
    return wrap_tensors(plan, storages)
