"""Loading a sharded safetensors checkpoint while it downloads: each shard fills its parameters as it lands."""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Mapping, Optional

from .._fileio import read_shard_index
from ..engine.fill import fill_parameters
from ..engine.mapped import AUTO, map_records
from ..formats.checkpoint import checkpoint_records, is_tf_safetensors
from ..plan import TensorRecord

if TYPE_CHECKING:
    import torch

    from ..hub.resolve import ShardDownloads

class NeedsWholeCheckpoint(Exception):
    """The stream met what only the whole checkpoint's headers decide (a shape that differs from the model's,
    TF-format safetensors, a shard that disagrees with the index): load the usual way once all shards are in."""


@dataclass(frozen=True)
class ShardTiming:
    """One shard of an overlapped load, in seconds since from_pretrained started: when its file was in the
    cache, and when the engine started and finished filling its parameters."""

    shard: str
    landed_s: float
    load_start_s: float
    load_end_s: float


class ShardStream:
    """The fill function of `place` for a checkpoint whose shards are still downloading.

    `placeholders()` gives one record per tensor the index names, without dtype or shape, so that
    keys are matched (missing and unexpected sets) from the index alone; the parameters are then
    allocated from the model's shapes, and `__call__` fills them shard by shard in the order the
    downloads finish, checking every real header against the index and the model first.

    A shard that has just landed is in the page cache: with zero_copy AUTO (or REQUIRED) its
    tensors that can be views of the file are mapped (engine/mapped.py) instead of copied, as a load from
    the warm cache would, so the download's machine does not also copy every byte once more.
    """

    def __init__(self, downloads: "ShardDownloads", index_path: str, started: float, zero_copy: str = AUTO) -> None:
        self.downloads = downloads
        self.zero_copy = zero_copy
        self.index_path = index_path
        self.started = started
        self.timings: list[ShardTiming] = []
        self.weight_map = read_shard_index(index_path).weight_map
        self.total_bytes = index_total_size(index_path)

    def placeholders(self) -> dict[str, TensorRecord]:
        """A record per index name: its shard's future path, no shape (match_keys skips the shape check;
        __call__ does it), a distinct offset so no two are taken for one storage."""
        return {name: TensorRecord(name=name, dtype="", shape=None, path=os.path.join(self.downloads.folder, shard),  # type: ignore[arg-type]
                                   offset=position, nbytes=0)
                for position, (name, shard) in enumerate(self.weight_map.items())}

    def __call__(self, targets: Mapping[str, "torch.Tensor"],
                 records: Mapping[str, TensorRecord]) -> dict[str, "torch.Tensor"]:
        """Fills targets[key] from the tensor records[key] names, shard by shard as downloads finish; returns
        the views of mapped shards that stand in for their targets (left unwritten).

        Raises the download's HubError, CheckpointError for unreadable shards, NeedsWholeCheckpoint,
        ZeroCopyError (zero_copy REQUIRED) for a tensor that cannot view its file.
        """
        replaced: dict[str, "torch.Tensor"] = {}
        keys_by_name: dict[str, list[str]] = {}
        for key, record in records.items():
            keys_by_name.setdefault(record.name, []).append(key)
        first_shard = min(self.weight_map.values(), default="")
        for path in self.downloads.completed():
            shard = os.path.basename(path)
            if shard == first_shard and is_tf_safetensors(path):
                raise NeedsWholeCheckpoint(f"{path} holds TensorFlow-format safetensors")
            found = checkpoint_records(path)
            if {record.name for record in found} != {n for n, s in self.weight_map.items() if s == shard}:
                raise NeedsWholeCheckpoint(f"{path} holds other tensors than {self.index_path} maps to it")
            chosen_targets, chosen = {}, {}
            for record in found:
                for key in keys_by_name.get(record.name, ()):
                    if tuple(record.shape) != tuple(targets[key].shape):
                        raise NeedsWholeCheckpoint(f"{record.name} has shape {record.shape}, the model "
                                                   f"{tuple(targets[key].shape)}")
                    chosen_targets[key], chosen[key] = targets[key], record
            load_start = time.perf_counter()
            views = map_records(chosen, {key: target.dtype for key, target in chosen_targets.items()},
                                next(iter(chosen_targets.values())).device if chosen_targets else "cpu",
                                self.zero_copy)
            replaced.update(views)
            fill_parameters({key: target for key, target in chosen_targets.items() if key not in views},
                      {key: record for key, record in chosen.items() if key not in views})
            load_end = time.perf_counter()
            self.timings.append(ShardTiming(shard, self.downloads.landed[shard] - self.started,
                                            load_start - self.started, load_end - self.started))
        return replaced


def index_total_size(index_path: str) -> Optional[int]:
    """The tensor bytes a shard index announces (`metadata.total_size`, written by transformers and
    huggingface_hub), or None when it has none."""
    return read_shard_index(index_path).total_size
