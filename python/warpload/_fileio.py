"""Small files written atomically and JSON objects read with a typed error: what configs, indexes and caches share."""
from __future__ import annotations

import json
import os
import tempfile
from typing import Any, Callable

from .errors import CheckpointError


def write_atomically(path: str, write: "Callable[[str], object]") -> None:
    """Calls write(temporary path) next to path, then renames: a killed process leaves no half file."""
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
    """The JSON object in a file (config.json, an index). Raises CheckpointError for anything else."""
    try:
        with open(path, encoding="utf-8") as handle:
            table = json.load(handle)
    except (UnicodeDecodeError, ValueError) as err:
        raise CheckpointError(f"{path} is not valid JSON ({err}); fix or re-save it", path=path) from err
    if not isinstance(table, dict):
        raise CheckpointError(f"{path} holds a JSON {type(table).__name__}, expected an object", path=path)
    return table
