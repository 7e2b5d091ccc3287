"""warpload: load Hugging Face checkpoints as fast as the hardware allows.

Importing the package is cheap: torch, numpy, huggingface_hub and the C++ engine load on
first use of a function that needs them (PEP 562 module __getattr__).
"""
from __future__ import annotations

# No `typing` here: it would double the import time of the package (3.7 ms of 7.7 ms measured).
__version__ = "0.1.0"

_LAZY = {
    "load": "tensors",
    "load_file": "tensors",
    "safe_open": "tensors",
    "save_file": "tensors",
    "save": "tensors",
    "load_checkpoint": "tensors",
    "load_torch": "tensors",
    "errors": None,
    "AutoModelForCausalLM": "loading.auto",
    "AutoConfig": "loading.auto",
    "GenerationConfig": "models.generation_config",
    "AutoTokenizer": "tokenization.auto",
}

__all__ = ["load", "load_file", "safe_open", "save_file", "save", "load_checkpoint", "load_torch",
           "AutoModelForCausalLM", "AutoConfig", "AutoTokenizer", "GenerationConfig", "errors", "__version__"]


def __getattr__(name: str) -> object:
    if name not in _LAZY:
        raise AttributeError(f"module 'warpload' has no attribute {name!r}")
    import importlib

    module_name = _LAZY[name]
    if module_name is None:
        value = importlib.import_module(f".{name}", __name__)
    else:
        value = getattr(importlib.import_module(f".{module_name}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
