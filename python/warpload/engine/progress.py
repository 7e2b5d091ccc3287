"""The byte counter of a load: the engine advances it chunk by chunk; whoever shows progress reads it."""
from __future__ import annotations

import contextvars
from contextlib import contextmanager
from typing import Any, Iterator, Optional

# The counter of the load running in this context. A context variable rather than a parameter: it
# reaches every engine call of one from_pretrained (windows, mapped prefaults, the CUDA ring,
# shards loaded as they land) without passing through the model builders, and loads running in
# other threads keep their own (hub/resolve.py routes per-call proxies the same way).
_counter: contextvars.ContextVar[Optional[Any]] = contextvars.ContextVar("warpload_progress_counter", default=None)


def current_counter() -> Optional[Any]:
    """The engine's Progress counter of the load watched in this context, or None: pass it to execute,
    cuda_execute and prefault."""
    return _counter.get()


def new_counter() -> Any:
    """A fresh engine Progress counter (its `bytes` grow as execute, cuda_execute and prefault finish chunks)."""
    from .._native import core

    return core().Progress()


@contextmanager
def counting(counter: Optional[Any]) -> Iterator[None]:
    """Inside it, current_counter() is `counter` in this context (and in threads started with a copy of it)."""
    token = _counter.set(counter)
    try:
        yield
    finally:
        _counter.reset(token)
