"""sha256 of Hub downloads computed from the bytes as huggingface_hub writes them, so that checking a new
LFS blob against its name needs no second pass over the file once the download ends.

huggingface_hub checks only a download's size; warpload checks the content hash too (hub/resolve.py
`_fetch_checked`). Hashing the finished blob re-reads it and, for the last shards of a download,
adds that time after the download ends (1.2 GB: ~0.6 s of sha256 on this 2-core VM). Here the
digest is fed chunk by chunk while huggingface_hub writes its temporary file, on the download's own
thread, so it overlaps the transfer. Anything unusual (a resumed file that did not start empty, a
rewind after a server ignored Range, xet downloads that bypass http_get, a git-sha1 name) leaves
no digest, and the caller hashes the finished file as before: the fast path never decides alone
that a blob is good unless it saw every byte written.
"""
from __future__ import annotations

import contextlib
import contextvars
import hashlib
import os
import threading
from typing import Any, BinaryIO, Iterator, Optional

# Digests of this call's downloads by blob path, for the context that asked (a from_pretrained worker).
_WRITTEN: contextvars.ContextVar[Optional[dict[str, str]]] = contextvars.ContextVar("warpload_written_hashes",
                                                                                   default=None)
_PATCH_LOCK = threading.Lock()
_SHA256_HEX = frozenset("0123456789abcdef")


def _blob_of(temp_name: str) -> Optional[str]:
    """The blob a huggingface_hub temporary file becomes ('<etag>[.<tag>].incomplete' -> '<etag>') when the
    etag is a sha256 (an LFS file); None otherwise."""
    folder, base = os.path.split(temp_name)
    etag = base.split(".", 1)[0]
    if not base.endswith(".incomplete") or len(etag) != 64 or not set(etag) <= _SHA256_HEX:
        return None
    return os.path.join(os.path.realpath(folder), etag)


class _HashingFile:
    """huggingface_hub's temporary file, hashing what is written through it while nothing else moves it."""

    def __init__(self, handle: BinaryIO) -> None:
        self._handle = handle
        self.digest: Optional[Any] = hashlib.sha256() if handle.tell() == 0 else None

    def write(self, data: bytes) -> int:
        if self.digest is not None:
            self.digest.update(data)
        return self._handle.write(data)

    def seek(self, *args: Any) -> int:
        self.digest = None
        return self._handle.seek(*args)

    def truncate(self, *args: Any) -> int:
        self.digest = None
        return self._handle.truncate(*args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._handle, name)


@contextlib.contextmanager
def written_hashes() -> Iterator[dict[str, str]]:
    """Collects, for downloads huggingface_hub makes in this context, {real blob path: sha256 hex of the bytes
    written}; a blob missing from it was not (entirely) seen being written."""
    _hash_http_get_writes()
    written: dict[str, str] = {}
    token = _WRITTEN.set(written)
    try:
        yield written
    finally:
        _WRITTEN.reset(token)


def _hash_http_get_writes() -> None:
    """Wraps huggingface_hub's http_get once; the wrapper hashes only in contexts inside written_hashes(),
    every other caller gets http_get unchanged."""
    from huggingface_hub import file_download

    with _PATCH_LOCK:
        if getattr(file_download.http_get, "_warpload_hashing", False):
            return
        http_get = file_download.http_get

        def hashing_http_get(url: str, temp_file: BinaryIO, *args: Any, **kwargs: Any) -> Any:
            written = _WRITTEN.get()
            blob = _blob_of(getattr(temp_file, "name", "") or "") if written is not None else None
            # A resume of this download (http_get retries itself) already writes through the wrapper.
            if blob is None or isinstance(temp_file, _HashingFile):
                return http_get(url, temp_file, *args, **kwargs)
            hashing = _HashingFile(temp_file)
            result = http_get(url, hashing, *args, **kwargs)
            if hashing.digest is not None:
                written[blob] = hashing.digest.hexdigest()
            return result

        hashing_http_get._warpload_hashing = True  # type: ignore[attr-defined]
        file_download.http_get = hashing_http_get
