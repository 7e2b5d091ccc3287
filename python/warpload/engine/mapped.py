"""Parameters that view the memory-mapped checkpoint (copy-on-write) instead of owned copies, prefaulted in parallel."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping, Optional, Union

from .. import constants
from .._native import core
from ..dtypes import DTYPES
from ..errors import ZeroCopyError
from ..plan import LoadPlan, TensorRecord, plan_load
from . import host as engine
from .progress import current_counter

if TYPE_CHECKING:
    import torch

# zero_copy= values: map where possible (transformers 5's behaviour), never, or for every tensor.
AUTO, OWNED, REQUIRED = "auto", "owned", "required"


def zero_copy_mode(option: Union[None, bool, str]) -> str:
    """AUTO, OWNED or REQUIRED for from_pretrained's `zero_copy` (None: WARPLOAD_ZERO_COPY, else "auto")."""
    if option is None:
        option = constants.zero_copy()
    if option is True:
        return REQUIRED
    if option is False:
        return OWNED
    if option == "auto":
        return AUTO
    raise ValueError(f"zero_copy={option!r}: pass None or 'auto' (map what needs no conversion), False (owned "
                     "copies) or True (map every tensor, or raise)")


def why_not_mapped(record: TensorRecord, dtype: "torch.dtype", device: Any) -> Optional[str]:
    """Why a parameter of `dtype` on `device` cannot view record's bytes in the file, or None when it can."""
    info = DTYPES[record.dtype]
    if str(device) != "cpu":
        return f"it is loaded to {device}, and only CPU memory can map a file"
    if record.transpose:
        return "it is transposed while loading (TensorFlow layout)"
    if record.byteswap:
        return "it is stored big-endian and byte-swapped while loading"
    if info.torch_name is None or f"torch.{info.torch_name}" != str(dtype):
        return f"it is stored as {record.dtype} and the model wants {dtype} (pass dtype= matching the file)"
    if not aligned_in_file(record):
        return (f"its bytes start at offset {record.offset}, not a multiple of its {info.bits}-bit element size "
                "(legacy .bin files do not align tensors; re-save the checkpoint as safetensors)")
    return None


def views_or_copies(plan: LoadPlan) -> dict[str, "torch.Tensor"]:
    """load_checkpoint's zero_copy=True: views of the mapped files for storages aligned to their element size;
    copies of the others (unaligned legacy .bin storages, and big-endian ones, byte-swapped while copying)."""
    files = {path: core().File(path) for path in plan.paths}
    viewed, copied = [], []
    for planned in plan.tensors:
        record = planned.record
        (viewed if aligned_in_file(record) and not record.byteswap else copied).append(record)
    tensors = engine.zero_copy_views(plan_load(viewed), files)
    if copied:
        copies = plan_load(copied)
        tensors.update(engine.materialize(copies, files=[files[path] for path in copies.paths]))
    return tensors


def aligned_in_file(record: TensorRecord) -> bool:
    """Whether record's bytes start on a multiple of its element size (whole bytes for packed dtypes),
    so a tensor can view them where they are."""
    return record.offset % max(DTYPES[record.dtype].bits // 8, 1) == 0


def map_records(records: Mapping[str, TensorRecord], dtypes: Mapping[str, "torch.dtype"], device: Any,
                mode: str) -> dict[str, "torch.Tensor"]:
    """Tensors viewing the checkpoint files for the keys of records that can be mapped (all of them, or none
    with mode OWNED; with AUTO only those whose file is mostly in the page cache: cold files copy faster
    than they map), their pages read and entered into the page tables in parallel before returning.

    Writes to the tensors stay in this process (MAP_PRIVATE copy-on-write); the files stay mapped
    while any tensor of theirs lives. Raises ZeroCopyError (mode REQUIRED) naming the first key
    that cannot be mapped and why, CheckpointError for bytes outside their file, EngineIOError
    when the disk cannot deliver a page.
    """
    if mode == OWNED:
        return {}
    mappable = {}
    for key, record in records.items():
        reason = why_not_mapped(record, dtypes[key], device)
        if reason is None:
            mappable[key] = record
        elif mode == REQUIRED:
            raise ZeroCopyError(f"zero_copy=True: tensor {record.name!r} of {record.path} cannot view the file: "
                                f"{reason}. Pass zero_copy=None to copy such tensors, or False to copy all.")
    files = {path: core().File(path) for path in {record.path for record in mappable.values()}}
    if mode == AUTO:
        warm = {path for path, file in files.items() if is_warm(file)}  # one mincore pass per file
        mappable = {key: record for key, record in mappable.items() if record.path in warm}
    if not mappable:
        return {}
    plan = plan_load(list(mappable.values()))
    prefault(plan, files)
    views = engine.zero_copy_views(plan, files)
    return {key: views[record.name] for key, record in mappable.items()}


def is_warm(file: Any) -> bool:
    """Whether enough of the file is in the page cache for mapping it to beat copying it (constants.py)."""
    return file.resident_fraction() >= constants.MAP_WARM_FRACTION


def prefault(plan: LoadPlan, files: Mapping[str, Any]) -> bool:
    """Reads every storage of the plan into its file's mapping on the engine's threads (GIL released), so
    the first forward takes no page faults; on a cold file this is the parallel read. Returns whether
    MADV_POPULATE_READ did it (else one byte per page was read). Raises CheckpointError (with path and
    offset) for a range outside its file."""
    index = {path: i for i, path in enumerate(plan.paths)}
    spans: list[list[int]] = []
    for storage in sorted(plan.storages, key=lambda s: (index[s.path], s.offset)):
        file, end = index[storage.path], storage.offset + storage.nbytes
        if spans and spans[-1][0] == file and storage.offset <= spans[-1][2]:
            spans[-1][2] = max(spans[-1][2], end)
        else:
            spans.append([file, storage.offset, end])
    ranges = [(file, begin, end - begin) for file, begin, end in spans if end > begin]
    return core().prefault([files[path] for path in plan.paths], ranges, constants.num_threads(),
                                  progress=current_counter())
