"""Git LFS for the test Hub without git-lfs: large files committed as LFS pointers, their bodies under .git/lfs.

The Hub stores weights with Git LFS: the commit holds a ~130-byte pointer (`oid sha256:<hex>`,
`size <n>`), the body lives in LFS storage, and /resolve/ answers with the body's sha256 as ETag
(`X-Linked-Etag`) and its size (`X-Linked-Size`). git-lfs itself is often not installed, so
`track_lfs` configures the same clean/smudge filter git-lfs would, with this file as the filter
program: `git add` stores each matching file in `.git/lfs/objects/aa/bb/<oid>` (the layout olah
and git-lfs read) and commits its pointer; checkout writes the body back, so the work tree keeps
real files that tests load as local references. `lfs_pointer` is the reading side the front uses
(tests/hub_server.py) to serve bodies from disk without hashing them.

    python hub_lfs.py clean <git dir>   < body     > pointer
    python hub_lfs.py smudge <git dir>  < pointer  > body
"""
from __future__ import annotations

import hashlib
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Optional

# The patterns the Hub's default .gitattributes sends to LFS, for the formats the tests commit.
LFS_PATTERNS = ("*.safetensors", "*.bin", "*.h5", "*.pt")
# git-lfs spec v1 pointer; olah recognises pointers of 121-149 bytes with exactly these three lines.
_POINTER = re.compile(rb"version https://git-lfs\.github\.com/spec/v1\noid sha256:([0-9a-f]{64})\nsize ([0-9]+)\n")
POINTER_MAX_BYTES = 1024
_COPY_CHUNK = 8 << 20


@dataclass(frozen=True)
class LfsObject:
    """An LFS body: its sha256 (the pointer's oid), size in bytes, and where it is stored."""

    oid: str
    size: int
    path: Path


def object_path(git_dir: Path, oid: str) -> Path:
    """Where git-lfs (and olah) keep the body with sha256 `oid`."""
    return git_dir / "lfs" / "objects" / oid[:2] / oid[2:4] / oid


def pointer_text(oid: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{oid}\nsize {size}\n".encode()


def lfs_pointer(git_dir: Path, data: bytes) -> Optional[LfsObject]:
    """The object a committed file's content points to, or None when the content is no LFS pointer."""
    match = _POINTER.fullmatch(data)
    if match is None:
        return None
    oid = match.group(1).decode()
    return LfsObject(oid, int(match.group(2)), object_path(git_dir, oid))


def store(git_dir: Path, body: BinaryIO, head: bytes = b"") -> bytes:
    """Copies `head` then `body` into LFS storage (atomically, under their sha256) and returns the pointer."""
    digest, size = hashlib.sha256(head), len(head)
    tmp_dir = git_dir / "lfs" / "tmp"
    tmp_dir.mkdir(parents=True, exist_ok=True)
    handle, tmp_name = tempfile.mkstemp(dir=tmp_dir)
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(head)
            while chunk := body.read(_COPY_CHUNK):
                digest.update(chunk)
                out.write(chunk)
                size += len(chunk)
        target = object_path(git_dir, digest.hexdigest())
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp_name, target)
    finally:
        if os.path.exists(tmp_name):
            os.remove(tmp_name)
    return pointer_text(digest.hexdigest(), size)


def track_lfs(repo: Path, patterns: tuple[str, ...] = LFS_PATTERNS) -> None:
    """Makes `git add` in `repo` (already `git init`ed) commit files matching `patterns` as LFS pointers.

    The patterns go to .git/info/attributes rather than a committed .gitattributes, so the repo
    lists the same files as without LFS.
    """
    git_dir = repo / ".git"
    info = git_dir / "info"
    info.mkdir(exist_ok=True)
    with open(info / "attributes", "a", encoding="utf-8") as attributes:
        attributes.writelines(f"{pattern} filter=lfs diff=lfs merge=lfs -text\n" for pattern in patterns)
    program = f"{shlex.quote(sys.executable)} {shlex.quote(os.fspath(Path(__file__).resolve()))}"
    for step in ("clean", "smudge"):
        subprocess.run(["git", "config", f"filter.lfs.{step}", f"{program} {step} {shlex.quote(os.fspath(git_dir))}"],
                       cwd=repo, check=True)
    subprocess.run(["git", "config", "filter.lfs.required", "true"], cwd=repo, check=True)


def _clean(git_dir: Path, source: BinaryIO, sink: BinaryIO) -> None:
    head = source.read(POINTER_MAX_BYTES + 1)
    if lfs_pointer(git_dir, head) is not None:  # already a pointer (git-lfs passes those through too)
        sink.write(head)
        return
    sink.write(store(git_dir, source, head))


def _smudge(git_dir: Path, source: BinaryIO, sink: BinaryIO) -> None:
    data = source.read(POINTER_MAX_BYTES + 1)
    lfs = lfs_pointer(git_dir, data)
    if lfs is None:  # not a pointer: pass the content through unchanged
        sink.write(data)
        shutil.copyfileobj(source, sink, _COPY_CHUNK)
        return
    with open(lfs.path, "rb") as body:
        shutil.copyfileobj(body, sink, _COPY_CHUNK)


if __name__ == "__main__":
    step, git_dir_arg = sys.argv[1], Path(sys.argv[2])
    if step == "clean":
        _clean(git_dir_arg, sys.stdin.buffer, sys.stdout.buffer)
    elif step == "smudge":
        _smudge(git_dir_arg, sys.stdin.buffer, sys.stdout.buffer)
    else:
        sys.exit(f"hub_lfs.py: unknown filter step {step!r}; use clean or smudge")
