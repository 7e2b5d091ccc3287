"""The one owner of the compiled extension `_core`: every other module reaches it through `core()`."""
from __future__ import annotations

from types import ModuleType


def core() -> ModuleType:
    """The compiled extension, imported on first use so `import warpload` stays cheap."""
    from . import _core

    return _core
