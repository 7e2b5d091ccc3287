"""Loads plans straight into GPU memory: torch allocates the tensors, the engine streams bytes in via pinned memory."""
from __future__ import annotations

import dataclasses
import glob
import importlib.util
import os
from typing import TYPE_CHECKING, Any, Callable, Optional, Sequence

from .. import constants
from .._native import core
from ..constants import TENSOR_ALIGNMENT
from ..dtypes import torch_dtype
from ..plan import LoadPlan, PlannedStorage, TensorRecord
from . import host
from .progress import current_counter

if TYPE_CHECKING:
    import torch

# Plain sonames last: the CUDA 13 and 12 runtimes torch wheels ship, then whatever ldconfig knows.
RUNTIME_SONAMES = ("libcudart.so.13", "libcudart.so.12", "libcudart.so")
MIB = 1 << 20


def is_cuda(device: Any) -> bool:
    """Whether device names a CUDA device ("cuda", "cuda:1", torch.device("cuda", 0), or an index,
    which safetensors reads as a CUDA device), without importing torch."""
    if isinstance(device, int) and not isinstance(device, bool):
        return True
    return str(device).split(":")[0] == "cuda"


def wanted(device: Any) -> bool:
    """Whether a load to `device` goes through the pinned-ring pipeline: a CUDA device, and torch has CUDA."""
    if not is_cuda(device):
        return False
    import torch

    return torch.cuda.is_available()


def runtime_candidates() -> list[str]:
    """The libcudart files to try, best first: WARPLOAD_CUDA_RUNTIME alone when set; else the one
    already loaded in this process (torch's, so pointers and contexts are shared by construction),
    the ones torch's wheels ship (site-packages/nvidia/*/lib, torch/lib), then the plain sonames."""
    override = os.environ.get(constants.ENV_CUDA_RUNTIME)
    if override:
        return [override]
    candidates = _loaded_runtimes()
    spec = importlib.util.find_spec("torch")
    if spec is not None and spec.submodule_search_locations:
        torch_dir = list(spec.submodule_search_locations)[0]
        site = os.path.dirname(torch_dir)
        for pattern in ("nvidia/cuda_runtime/lib/libcudart.so*", "nvidia/*/lib/libcudart.so*",
                        "torch/lib/libcudart*.so*"):
            candidates += sorted(glob.glob(os.path.join(site, pattern)), reverse=True)
    candidates += RUNTIME_SONAMES
    return list(dict.fromkeys(candidates))


def _loaded_runtimes() -> list[str]:
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
            paths = [line.split(None, 5)[-1].strip() for line in maps if "libcudart" in line]
    except OSError:
        return []
    return [path for path in dict.fromkeys(paths) if os.path.basename(path).startswith("libcudart")]


def runtime_info(runtime: Optional[str] = None) -> tuple[str, int]:
    """(path, device count) of the CUDA runtime loads would use.

    Raises CudaUnavailableError when none loads or it sees no GPU.
    """
    return core().cuda_runtime([runtime] if runtime else runtime_candidates())


@dataclasses.dataclass(frozen=True)
class Ring:
    """The pinned ring of one call: num_buffers buffers of buffer_bytes each."""

    buffer_bytes: int
    num_buffers: int


def ring_for(total_bytes: int) -> Ring:
    """The ring a plan of total_bytes gets: WARPLOAD_CUDA_BUFFERS buffers of WARPLOAD_CUDA_BUFFER_MB,
    shrunk (whole MiB, at least 1) so a small plan pins no more than about its own size."""
    num_buffers = constants.positive_int_env(constants.ENV_CUDA_BUFFERS, constants.CUDA_BUFFERS)
    largest = constants.positive_int_env(constants.ENV_CUDA_BUFFER_MB, constants.CUDA_BUFFER_MB) * MIB
    share = -(-total_bytes // num_buffers)
    return Ring(max(MIB, min(largest, -(-share // MIB) * MIB)), num_buffers)


def copy_to_device(plan: LoadPlan, regions: Sequence[tuple[int, int]], destinations: Sequence[tuple[int, int]],
                   files: Sequence[Any], device_index: int, *, padded: Sequence[int] = (), ring: Optional[Ring] = None,
                   runtime: Optional[str] = None) -> dict[str, int]:
    """Copies every storage's source bytes, unconverted, to destinations[i] = (region index, byte offset)
    in the device `regions` ((address, nbytes) pairs: host.tensor_region); returns the engine's counters
    (bytes, batches, copies, reads, pinned_bytes, mmap_files, pread_files).

    Destinations close together in a region listed in `padded` (memory holding only this plan's storages
    and padding) share a copy, gap included. Raises DestinationError for a storage that does not fit its
    region (before any byte moves), CheckpointError / EngineIOError for the files, CudaError for a failed
    CUDA call, CudaUnavailableError when no runtime or GPU is there.
    """
    raw = dataclasses.replace(plan, storages=tuple(
        dataclasses.replace(s, dtype=s.source_dtype, transposed_from=None) for s in plan.storages))
    ring = ring or ring_for(sum(s.nbytes for s in plan.storages))
    with host.naming_tensors(raw):
        return core().cuda_execute(
            [runtime] if runtime else runtime_candidates(), list(files), host.plan_table(raw, destinations),
            list(regions), device_index, ring.buffer_bytes, ring.num_buffers, constants.CUDA_STREAMS,
            warm_fraction=constants.MAP_WARM_FRACTION, coalesce_gap=constants.MIRRORED_GAP_MAX_BYTES,
            padded=list(padded), num_threads=constants.num_threads(), method=constants.read_method(),
            progress=current_counter())


# Source bytes of converted or transposed storages pass through a device staging buffer of at
# most this size per engine call (a larger storage gets a window of its own): converting a 30B
# parameter fp32 checkpoint to bf16 in one go would stage 120 GB next to 60 GB of parameters.
STAGING_WINDOW_BYTES = 1 << 30


def _aligned(nbytes: int) -> int:
    return -(-nbytes // TENSOR_ALIGNMENT) * TENSOR_ALIGNMENT


def _needs_device_work(storage: PlannedStorage) -> bool:
    return storage.converts or storage.transposed_from is not None


def _staging_windows(storages: Sequence[PlannedStorage], staged: Sequence[int]) -> list[list[int]]:
    """The staged storages cut into windows of at most STAGING_WINDOW_BYTES (always at least one window)."""
    windows: list[list[int]] = [[]]
    size = 0
    for index in staged:
        if windows[-1] and size + storages[index].nbytes > STAGING_WINDOW_BYTES:
            windows.append([])
            size = 0
        windows[-1].append(index)
        size += _aligned(storages[index].nbytes)
    return windows


def _conversion_groups(storages: Sequence[PlannedStorage], window: Sequence[int]) -> dict[Any, list[int]]:
    """Storages converted by one kernel: one dtype pair each; a transposed storage alone."""
    groups: dict[Any, list[int]] = {}
    for index in window:
        storage = storages[index]
        groups.setdefault(index if storage.transposed_from else (storage.source_dtype, storage.dtype), []).append(index)
    return groups


Finish = Callable[[dict, "torch.Tensor", dict], None]


def _fill(plan: LoadPlan, files: Sequence[Any], target: "torch.device", regions: Sequence[tuple[int, int]],
          direct: dict[int, tuple[int, int]], staged: Sequence[int], padded: Sequence[int], finish: Finish,
          runtime: Optional[str], stats: Optional[dict]) -> None:
    """Copies storages `direct` (index -> (region, offset) in `regions`, those in `padded` holding padding
    between storages) there, and storages `staged` window by window into a staging buffer, each window's
    groups packed back to back; after each engine call finish(groups, staging, offsets) converts that
    window on the device."""
    import torch

    for number, window in enumerate(_staging_windows(plan.storages, staged)):
        groups = _conversion_groups(plan.storages, window)
        offsets: dict[int, int] = {}
        cursor = 0
        for members in groups.values():
            for index in members:
                offsets[index] = cursor
                cursor += plan.storages[index].nbytes
            cursor = _aligned(cursor)
        staging = torch.empty(cursor, dtype=torch.uint8, device=target)
        destinations = dict(direct) if number == 0 else {}
        destinations.update((index, (len(regions), offset)) for index, offset in offsets.items())
        if destinations:
            part = dataclasses.replace(plan, storages=tuple(plan.storages[index] for index in destinations))
            _run(part, [*regions, host.tensor_region(staging)], list(destinations.values()), files, target,
                 [*padded, len(regions)], runtime, stats)
        finish(groups, staging, offsets)
        del staging  # its memory may serve the next window once the conversions queued on it are done
    if target.type == "cuda":
        # Conversions run on torch's stream; tensors are complete when the call returns.
        torch.cuda.current_stream(target).synchronize()


def materialize(plan: LoadPlan, device: Any, files: Optional[Sequence[Any]] = None, *,
                runtime: Optional[str] = None, stats: Optional[dict] = None) -> dict[str, "torch.Tensor"]:
    """Loads every tensor of the plan onto `device`, in memory torch owns.

    Plain storages go straight from the ring into one device buffer laid out like the CPU path's.
    Storages that convert or transpose land as raw bytes in a staging buffer and are converted by
    torch on the device, one kernel per dtype pair (one per transposed matrix) and staging window.
    Nothing aliases a pinned buffer; all work is complete when this returns. `device` may be the
    CPU (tests drive the whole path with a fake runtime whose "device" memory is host memory).
    `stats`, when given, receives the engine's counters.
    """
    import torch

    target = torch.device(device)
    files = host.open_files(plan.paths) if files is None else files
    storages = plan.storages
    arena = torch.empty(plan.total_nbytes, dtype=torch.uint8, device=target)
    staged = [index for index, storage in enumerate(storages) if _needs_device_work(storage)]
    views: list[Optional[torch.Tensor]] = [
        None if _needs_device_work(s) else _typed(arena, s.dst_offset, s.dst_nbytes, s.dtype) for s in storages]

    def convert(groups: dict, staging: "torch.Tensor", offsets: dict) -> None:
        for members in groups.values():
            first, last = storages[members[0]], storages[members[-1]]
            begin = offsets[members[0]]
            source = _typed(staging, begin, offsets[members[-1]] + last.nbytes - begin, first.source_dtype)
            if first.transposed_from is not None:
                rows, cols = first.transposed_from
                converted = torch.empty((cols, rows), dtype=torch_dtype(first.dtype), device=target)
                converted.copy_(source.view(rows, cols).t())
                views[members[0]] = converted.view(-1)
                continue
            converted = source.to(torch_dtype(first.dtype))
            cursor = 0
            for index in members:
                count = storages[index].dst_nbytes // converted.element_size()
                views[index] = converted.narrow(0, cursor, count)
                cursor += count

    direct = {index: (0, s.dst_offset) for index, s in enumerate(storages) if not _needs_device_work(s)}
    _fill(plan, files, target, [host.tensor_region(arena)], direct, staged, [0], convert, runtime, stats)
    return host.wrap_tensors(plan, views)


def _typed(buffer: "torch.Tensor", offset: int, nbytes: int, dtype: str) -> "torch.Tensor":
    return buffer.narrow(0, offset, nbytes).view(torch_dtype(dtype))


def _run(plan: LoadPlan, regions: Sequence[tuple[int, int]], destinations: Sequence[tuple[int, int]],
         files: Sequence[Any], target: "torch.device", padded: Sequence[int], runtime: Optional[str],
         stats: Optional[dict]) -> None:
    """Copies into memory torch just allocated on target, once the work torch queued there is done."""
    import torch

    if target.type == "cuda":
        # The caching allocator may hand out memory that kernels queued on torch's stream still
        # use; the engine writes on its own streams, so that work must finish first.
        torch.cuda.current_stream(target).synchronize()
        index = target.index if target.index is not None else torch.cuda.current_device()
    else:
        index = 0
    counters = copy_to_device(plan, regions, destinations, files, index, padded=padded, runtime=runtime)
    if stats is not None:
        for key, value in counters.items():
            stats[key] = max(stats.get(key, 0), value) if key == "pinned_bytes" else stats.get(key, 0) + value


def fill_tensors(pairs: Sequence[tuple[TensorRecord, "torch.Tensor"]], *, runtime: Optional[str] = None,
              stats: Optional[dict] = None) -> None:
    """Fills contiguous device tensors (from_pretrained's parameters) with their records' bytes.

    Each record must span its target whole (fill.receives_whole_storage), and each storage
    have one target. Records already in the target's dtype are copied straight into it; the
    others land in a staging buffer and are converted into their target by torch on the device.
    Raises as copy_to_device does.
    """
    from ..dtypes import dtype_name
    from ..plan import plan_load

    if not pairs:
        return
    target = pairs[0][1].device
    by_key = {(record.path, record.offset): tensor for record, tensor in pairs}
    plan = plan_load([record for record, _ in pairs])
    storages = plan.storages

    def destination(index: int) -> "torch.Tensor":
        return by_key[(storages[index].path, storages[index].offset)]

    regions: list[tuple[int, int]] = []
    direct: dict[int, tuple[int, int]] = {}
    for index, storage in enumerate(storages):
        if not storage.transposed_from and dtype_name(destination(index).dtype) == storage.source_dtype:
            direct[index] = (len(regions), 0)
            regions.append(host.tensor_region(destination(index)))
    staged = [index for index in range(len(storages)) if index not in direct]

    def convert(groups: dict, staging: "torch.Tensor", offsets: dict) -> None:
        for members in groups.values():
            for index in members:
                storage, out = storages[index], destination(index)
                source = _typed(staging, offsets[index], storage.nbytes, storage.source_dtype)
                if storage.transposed_from is not None:
                    source = source.view(storage.transposed_from).t()
                out.copy_(source.reshape(out.shape))

    _fill(plan, host.open_files(plan.paths), target, regions, direct, staged, [], convert, runtime, stats)
