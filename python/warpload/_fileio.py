"""Small files written atomically, and JSON files read with typed errors: config.json, shard indexes (one reader of
`*.index.json` for every caller: the Hub, the resolver, the TF reader, streamed shards, the dtype rule)."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any, Callable, Optional

from .errors import HeaderError


def write_atomically(path: str, write: "Callable[[str], object]") -> None:
    """Calls write(temporary path) next to path, then renames: a killed process leaves no half file."""
    import tempfile  # only writers pay for it (it imports random and shutil): loads import this module too

    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".tmp-", suffix=os.path.basename(path))
    os.close(fd)
    try:
        write(tmp)
        # mkstemp creates 0600 files; give the result the permissions a plain open() would.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def read_json_object(path: str) -> dict[str, Any]:
    """The JSON object in a file (config.json, an index). Raises HeaderError (a CheckpointError) for anything else."""
    try:
        with open(path, encoding="utf-8") as handle:
            table = json.load(handle)
    except (UnicodeDecodeError, ValueError) as err:
        raise HeaderError(f"{path} is not valid JSON ({err}); fix or re-save it", path=path) from err
    if not isinstance(table, dict):
        raise HeaderError(f"{path} holds a JSON {type(table).__name__}, expected an object", path=path)
    return table


@dataclass(frozen=True)
class ShardIndex:
    """A `*.index.json` of a sharded checkpoint: tensor name -> shard file name, and its metadata."""

    path: str
    weight_map: dict[str, str]
    metadata: dict[str, Any]

    @property
    def shards(self) -> list[str]:
        """The shard file names, sorted, each once."""
        return sorted(set(self.weight_map.values()))

    @property
    def total_size(self) -> Optional[int]:
        """The tensor bytes the index announces (transformers and huggingface_hub write it), or None."""
        total = self.metadata.get("total_size")
        return total if isinstance(total, int) and not isinstance(total, bool) and total >= 0 else None


def read_shard_index(path: str) -> ShardIndex:
    """The shard index at `path`. Raises HeaderError when it is not JSON, has no `weight_map` of plain shard file
    names, or its `metadata` is not an object; OSError when it cannot be read."""
    table = read_json_object(path)
    weight_map, metadata = table.get("weight_map"), table.get("metadata") or {}
    problem = None
    if not isinstance(weight_map, dict) or not all(isinstance(shard, str) for shard in weight_map.values()):
        problem = "its weight_map must map tensor names to shard file names"
    elif any(os.path.basename(shard) != shard for shard in weight_map.values()):
        problem = "its shard names must be plain file names"
    elif not isinstance(metadata, dict):
        problem = "its metadata must be an object"
    if problem:
        raise HeaderError(f"{path}: not a valid shard index: {problem}; re-save the checkpoint", path=path)
    return ShardIndex(path, weight_map, metadata)
