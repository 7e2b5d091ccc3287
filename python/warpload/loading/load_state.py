"""Fills a model built on the meta device: checkpoint names matched to its keys, each parameter allocated once."""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field, replace
from collections import defaultdict
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Optional, Protocol, Union

import torch
from torch import nn

from ..engine.fill import fill_parameters
from ..engine.mapped import AUTO, map_records
from ..errors import ShapeMismatchError
from ..plan import TensorRecord

if TYPE_CHECKING:
    from ..models.modeling import PreTrainedModel

logger = logging.getLogger(__name__)


# A checkpoint tensor: a record the engine reads, or a tensor given through `state_dict=`.
Source = Union[TensorRecord, torch.Tensor]
# Fills preallocated tensors with the checkpoint tensors records name: fill.fill_parameters, or a ShardStream,
# which may return tensors that stand in for some targets instead (views of shards mapped as they land).
Fill = Callable[[Mapping[str, torch.Tensor], Mapping[str, TensorRecord]], Optional[Mapping[str, torch.Tensor]]]


class Spread(Protocol):
    """A placement over several devices (loading/dispatch.py): each key's device, "disk" for offloaded ones."""

    def device_for(self, key: str) -> Any:
        """The torch device key is loaded onto, or "disk"."""

    def offload(self, key: str, source: Source, shape: tuple[int, ...], dtype: torch.dtype) -> None:
        """Keeps where a disk-placed key's bytes are, without loading them into memory."""

    def tie(self, pairs: Mapping[str, str]) -> None:
        """{target: source} keys now sharing one tensor: a disk-placed source's target reads the same bytes."""


@dataclass
class LoadingInfo:
    """transformers 5's loading report: sets of missing, unexpected and (key, checkpoint shape, model shape)."""

    missing_keys: set[str] = field(default_factory=set)
    unexpected_keys: set[str] = field(default_factory=set)
    mismatched_keys: set[tuple[str, torch.Size, torch.Size]] = field(default_factory=set)
    error_msgs: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The dict `output_loading_info=True` returns, with exactly transformers' keys."""
        return {"missing_keys": self.missing_keys, "unexpected_keys": self.unexpected_keys,
                "mismatched_keys": self.mismatched_keys, "error_msgs": self.error_msgs}

    def report(self) -> Optional[str]:
        """A summary of what did not load as it is, or None when everything did."""
        lines = [f"{status}: {', '.join(sorted(map(str, keys)))}" for status, keys in (
            ("unexpected (not used)", self.unexpected_keys), ("missing (newly initialised)", self.missing_keys),
            ("mismatched (newly initialised)", {key for key, _, _ in self.mismatched_keys})) if keys]
        return "\n".join(lines) or None

    def ignore_unexpected(self, patterns: Iterable[str]) -> None:
        """Drops unexpected keys matching any regex (re.search), as transformers' ignore lists do."""
        joined = "|".join(f"({pattern})" for pattern in patterns)
        if joined:
            regex = re.compile(joined)
            self.unexpected_keys = {key for key in self.unexpected_keys if regex.search(key) is None}


def match_keys(sources: Mapping[str, Source], model_shapes: Mapping[str, tuple[int, ...]], prefix: str,
               rename: Optional[Callable[[str], str]] = None) -> tuple[dict[str, str], LoadingInfo]:
    """Maps model keys to checkpoint names, and reports what does not fit.

    transformers 5's rule: a checkpoint name that starts with the base-model prefix loses it when
    the rest is a model key (head checkpoint into a base model), otherwise gains it when that is a
    model key (base checkpoint into a head model). Names that then match no key are unexpected;
    keys no name reaches are missing; matches of another shape are mismatched (not loaded).
    """
    assignments: dict[str, str] = {}
    info = LoadingInfo(missing_keys=set(model_shapes))
    for name, source in sources.items():
        key = rename(name) if rename is not None else name
        if prefix:
            stripped = re.sub(f"^{prefix}.", "", key, count=1)
            if key.startswith(prefix) and stripped in model_shapes:
                key = stripped
            elif f"{prefix}.{key}" in model_shapes:
                key = f"{prefix}.{key}"
        if key not in model_shapes:
            info.unexpected_keys.add(key)
            continue
        info.missing_keys.discard(key)
        # No shape: a shard still downloading, checked when it lands (loading/shard_stream.py).
        if source.shape is not None and tuple(source.shape) != tuple(model_shapes[key]):
            info.mismatched_keys.add((key, torch.Size(source.shape), torch.Size(model_shapes[key])))
        else:
            assignments[key] = name
    return assignments, info


def place(model: nn.Module, sources: Mapping[str, Source], assignments: Mapping[str, str],
          extra_keys: Iterable[str], dtype: torch.dtype, device: Union[str, torch.device] = "cpu",
          zero_copy: str = AUTO, fill: Fill = fill_parameters, *,
          dtype_overrides: Mapping[str, torch.dtype] = {}, spread: Optional[Spread] = None) -> list[torch.Tensor]:
    """Gives each assigned key its final tensor, loaded from its source, and each extra key uninitialised storage.

    On the CPU, a checkpoint tensor stored in its final dtype views the memory-mapped file
    (copy-on-write, prefaulted in parallel; engine/mapped.py) unless zero_copy is OWNED, as transformers
    5 gives. Other storage is allocated once per key, in `dtype` for floating tensors (the model's
    dtype otherwise; `dtype_overrides` names keys that take another dtype), on `device` (the CPU, or a
    GPU filled straight from the files), and left untouched until the engine writes it, so the
    operating system backs it only then.
    `state_dict=` tensors already in the right dtype become the parameters themselves, as in
    transformers. Returns the tensors put into the model. `fill(targets, records)` copies the
    records' bytes (loading/shard_stream.py passes one that waits for each shard's download and may return
    mapped views that replace some targets). With `spread`, each key goes to its own device, and disk-placed
    ones stay on meta, their sources kept by spread.offload.
    """
    if spread is None:
        return _place_on(model, sources, assignments, extra_keys, dtype, device, zero_copy, fill, dtype_overrides)
    meta = model.state_dict(keep_vars=True)
    groups: dict[Any, dict[str, str]] = defaultdict(dict)
    extras: dict[Any, list[str]] = defaultdict(list)
    for key, name in assignments.items():
        groups[spread.device_for(key)][key] = name
    for key in extra_keys:  # newly initialised tensors stay in memory
        target = spread.device_for(key)
        extras["cpu" if target == "disk" else target].append(key)
    placed = []
    for key, name in groups.pop("disk", {}).items():
        wanted = dtype_overrides.get(key, dtype if meta[key].is_floating_point() else meta[key].dtype)
        spread.offload(key, sources[name], tuple(meta[key].shape), wanted)
        placed.append(set_tensor(model, key, torch.empty(meta[key].shape, dtype=wanted, device="meta")))
    for target in set(groups) | set(extras):
        placed += _place_on(model, sources, groups.get(target, {}), extras.get(target, []), dtype, target,
                            zero_copy, fill, dtype_overrides)
    return placed


def _place_on(model: nn.Module, sources: Mapping[str, Source], assignments: Mapping[str, str],
              extra_keys: Iterable[str], dtype: torch.dtype, device: Union[str, torch.device], zero_copy: str,
              fill: Fill, dtype_overrides: Mapping[str, torch.dtype]) -> list[torch.Tensor]:
    meta = model.state_dict(keep_vars=True)

    def wanted(key: str) -> torch.dtype:
        if key in dtype_overrides:
            return dtype_overrides[key]
        return dtype if meta[key].is_floating_point() else meta[key].dtype

    def empty(key: str) -> torch.Tensor:
        return torch.empty(meta[key].shape, dtype=wanted(key), device=device)

    targets: dict[str, torch.Tensor] = {}
    records: dict[str, TensorRecord] = {}
    copies: dict[str, torch.Tensor] = {}
    for key, name in assignments.items():
        source = sources[name]
        if isinstance(source, TensorRecord):
            records[key] = source
        elif _adoptable(source, wanted(key)):
            targets[key] = source.detach()
        else:
            targets[key] = empty(key)
            copies[key] = source
    # Files still downloading (a fill from loading/shard_stream.py) are copied as they land, never mapped.
    if fill is fill_parameters:
        targets.update(map_records(records, {key: wanted(key) for key in records}, device, zero_copy))
    owned = {key: empty(key) for key in records if key not in targets}
    # A replaced target was never written: the operating system never backed its memory.
    replaced = fill(owned, {key: records[key] for key in owned})
    targets.update(owned)
    targets.update(replaced or {})
    with torch.no_grad():
        for key, source in copies.items():
            targets[key].copy_(source)
    for key in extra_keys:
        targets[key] = empty(key)
    return [set_tensor(model, key, tensor) for key, tensor in targets.items()]


def _adoptable(tensor: torch.Tensor, wanted: torch.dtype) -> bool:
    return tensor.device.type == "cpu" and tensor.dtype == wanted and tensor.is_contiguous()


def set_tensor(model: nn.Module, key: str, tensor: torch.Tensor) -> torch.Tensor:
    """Puts tensor into the model under key, as a Parameter (or a buffer, if key names one)."""
    parent_name, _, leaf = key.rpartition(".")
    module = model.get_submodule(parent_name)
    if leaf in module._buffers:
        module._buffers[leaf] = tensor
        return tensor
    parameter = nn.Parameter(tensor, requires_grad=tensor.is_floating_point())
    module._parameters[leaf] = parameter
    return parameter


def check_shapes(model: nn.Module, info: LoadingInfo, ignore_mismatched_sizes: bool) -> None:
    """Raises ShapeMismatchError for mismatched keys unless they are to be ignored (then they are re-initialised)."""
    if info.mismatched_keys and not ignore_mismatched_sizes:
        details = "; ".join(f"{key}: checkpoint {list(ckpt)}, model {list(mine)}"
                            for key, ckpt, mine in sorted(info.mismatched_keys))
        raise ShapeMismatchError(
            f"Error(s) in loading state_dict for {type(model).__name__}: size mismatch for {details}. Fix the config "
            "(or its keyword overrides), or pass ignore_mismatched_sizes=True to initialise these from scratch.")


def _same_source(a: Source, b: Source) -> bool:
    """Whether two checkpoint entries are one tensor (a .bin's tied weights share one storage view)."""
    if isinstance(a, TensorRecord) and isinstance(b, TensorRecord):
        return a == replace(b, name=a.name)
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        return a.data_ptr() == b.data_ptr() and a.shape == b.shape and a.stride() == b.stride() and a.dtype == b.dtype
    return False


def load_builtin(model: "PreTrainedModel", sources: Mapping[str, Source], dtype: torch.dtype,
                 ignore_mismatched_sizes: bool, device: Union[str, torch.device] = "cpu",
                 zero_copy: str = AUTO, fill: Fill = fill_parameters, spread: Optional[Spread] = None) -> LoadingInfo:
    """Fills a meta-built warpload model: loads what matches (zero_copy and fill as for place),
    initialises the rest, ties, computes buffers.

    Tying follows transformers 5: a tied output embedding missing from the checkpoint takes the
    input embedding's Parameter (it is never allocated); a checkpoint with only the output one
    gives it to both; with both present they are tied only when equal.
    """
    shapes = {key: tuple(tensor.shape) for key, tensor in model.state_dict().items()}
    assignments, info = match_keys(sources, shapes, model.base_model_prefix)
    check_shapes(model, info, ignore_mismatched_sizes)
    ties: list[tuple[str, str]] = []
    compare: list[tuple[str, str]] = []
    for target, source in model.tied_weights().items():
        if source in assignments and target in assignments:
            if _same_source(sources[assignments[source]], sources[assignments[target]]):
                del assignments[target]
                ties.append((target, source))
            else:
                compare.append((target, source))
        elif target in assignments:
            assignments[source] = assignments.pop(target)
            info.missing_keys.discard(source)
            ties.append((target, source))
        else:
            ties.append((target, source))
            if source in assignments:
                info.missing_keys.discard(target)
            else:
                logger.warning("%s: neither %s nor its tied %s is in the checkpoint; both are initialised randomly",
                               type(model).__name__, source, target)
    tied_targets = {target for target, _ in ties}
    uninitialised = (info.missing_keys | {key for key, _, _ in info.mismatched_keys}) - tied_targets
    place(model, sources, assignments, sorted(uninitialised), dtype, device, zero_copy, fill, spread=spread)
    for key in uninitialised:
        model.init_parameter(key)
    for target, source in compare:
        if torch.equal(model.get_parameter(target), model.get_parameter(source)):
            ties.append((target, source))
        else:
            logger.warning("%s: the checkpoint holds different %s and %s, so they are not tied; set "
                           "tie_word_embeddings=False in the config to silence this",
                           type(model).__name__, source, target)
    model.tie(ties)
    if spread is not None:
        spread.tie(dict(ties))
    model.reset_buffers("cpu")
    info.ignore_unexpected(model.ignored_unexpected_patterns())
    return info
