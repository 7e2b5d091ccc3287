"""Hugging Face file names, format limits and every WARPLOAD_* environment variable, in one place."""
from __future__ import annotations

import os

SAFETENSORS_WEIGHTS_NAME = "model.safetensors"
SAFETENSORS_INDEX_NAME = "model.safetensors.index.json"
PYTORCH_WEIGHTS_NAME = "pytorch_model.bin"
PYTORCH_INDEX_NAME = "pytorch_model.bin.index.json"

# What load_checkpoint looks for in a folder, best first: transformers prefers safetensors to .bin.
CHECKPOINT_NAMES = (SAFETENSORS_INDEX_NAME, SAFETENSORS_WEIGHTS_NAME, PYTORCH_INDEX_NAME, PYTORCH_WEIGHTS_NAME)

# safetensors/src/tensor.rs MAX_HEADER_SIZE: headers above 100 MB are refused.
SAFETENSORS_MAX_HEADER_BYTES = 100_000_000

# PyTorch .bin: the pickle is the header. A state dict costs ~100 bytes of pickle per tensor
# (517 KB for 5000 tensors), so 256 MiB is far above any real checkpoint while keeping a hostile
# file from making the unpickler build gigabytes of objects. The zip central directory gets the
# same bound. MARK nesting of a state dict is 3; 100 leaves room for nested training state.
TORCH_MAX_PICKLE_BYTES = 256 * 2**20
ZIP_MAX_CENTRAL_DIRECTORY_BYTES = 256 * 2**20
TORCH_MAX_PICKLE_NESTING = 100

# Owned tensors start on 64-byte boundaries inside their buffer: a cache line, and enough for
# any SIMD load torch issues.
TENSOR_ALIGNMENT = 64
# A storage whose bytes start at most this far after the previous one's in its file (a zip local
# header and data descriptor: 128 bytes in torch.save archives) is placed as far after it in the
# buffer, so the engine copies both, and the gap, as one row: 6,004 rows of a .bin cost ~10 ms
# more engine time than one.
MIRRORED_GAP_MAX_BYTES = 256

ENV_NUM_THREADS = "WARPLOAD_NUM_THREADS"
ENV_READ_METHOD = "WARPLOAD_READ_METHOD"
# auto (default), 1 or 0: transparent huge pages for load destinations (warpload/system.py).
ENV_HUGE_PAGES = "WARPLOAD_HUGE_PAGES"
# Read by csrc/convert.cpp once per process: forces the scalar conversion kernels (for tests
# that hold the SIMD and scalar paths to the same bits).
ENV_DISABLE_SIMD = "WARPLOAD_DISABLE_SIMD"

READ_METHODS = {"auto": 0, "mmap": 1, "pread": 2}


def num_threads() -> int:
    """Engine threads from WARPLOAD_NUM_THREADS; 0 means one per available core."""
    value = os.environ.get(ENV_NUM_THREADS, "0")
    try:
        threads = int(value)
    except ValueError:
        raise ValueError(f"{ENV_NUM_THREADS}={value!r} is not an integer; unset it or give a thread count") from None
    if threads < 0:
        raise ValueError(f"{ENV_NUM_THREADS}={threads} is negative; unset it or give a thread count")
    return threads


def read_method() -> int:
    """Engine read method code from WARPLOAD_READ_METHOD (auto, mmap or pread)."""
    value = os.environ.get(ENV_READ_METHOD, "auto").lower()
    if value not in READ_METHODS:
        raise ValueError(f"{ENV_READ_METHOD}={value!r}: choose one of {', '.join(READ_METHODS)}")
    return READ_METHODS[value]
