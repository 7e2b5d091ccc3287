"""Hugging Face file names, format limits and every WARPLOAD_* environment variable, in one place."""
from __future__ import annotations

import os
from typing import Optional

CONFIG_NAME = "config.json"
GENERATION_CONFIG_NAME = "generation_config.json"
SAFETENSORS_WEIGHTS_NAME = "model.safetensors"
SAFETENSORS_INDEX_NAME = "model.safetensors.index.json"
PYTORCH_WEIGHTS_NAME = "pytorch_model.bin"
PYTORCH_INDEX_NAME = "pytorch_model.bin.index.json"
# TensorFlow weights, as transformers 4.x names them.
TF_H5_WEIGHTS_NAME = "tf_model.h5"
TF_H5_INDEX_NAME = "tf_model.h5.index.json"
TF1_CHECKPOINT_INDEX_NAME = "model.ckpt.index"
# Tokenizer files, as transformers 5 names them (tokenization_utils_base.py, utils/hub.py);
# additional_chat_templates/ holds the named chat templates.
TOKENIZER_NAME = "tokenizer.json"
TOKENIZER_CONFIG_NAME = "tokenizer_config.json"
SPECIAL_TOKENS_MAP_NAME = "special_tokens_map.json"
ADDED_TOKENS_NAME = "added_tokens.json"
CHAT_TEMPLATE_NAME = "chat_template.jinja"
CHAT_TEMPLATES_DIR = "additional_chat_templates"
# What a slow (Python or sentencepiece) tokenizer reads when a repo has no tokenizer.json.
SLOW_TOKENIZER_NAMES = ("tokenizer.model", "spiece.model", "sentencepiece.bpe.model", "vocab.json", "merges.txt",
                        "vocab.txt", "tiktoken.model", "tekken.json")
TOKENIZER_FILE_NAMES = (TOKENIZER_NAME, TOKENIZER_CONFIG_NAME, SPECIAL_TOKENS_MAP_NAME, ADDED_TOKENS_NAME,
                        CHAT_TEMPLATE_NAME, *SLOW_TOKENIZER_NAMES)


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
# more engine time than one. The engine (csrc/engine.h may_span_gap) spans gaps of at most this
# many bytes, and only in memory that holds nothing but the plan's storages: rows merge across
# them, and the GPU ring sends destinations that close together with one copy.
MIRRORED_GAP_MAX_BYTES = 256

ENV_NUM_THREADS = "WARPLOAD_NUM_THREADS"
ENV_READ_METHOD = "WARPLOAD_READ_METHOD"
# auto (default), 1 or 0: transparent huge pages for load destinations (engine/machine.py).
ENV_HUGE_PAGES = "WARPLOAD_HUGE_PAGES"
# Read by csrc/convert.cpp once per process: forces the scalar conversion kernels (for tests
# that hold the SIMD and scalar paths to the same bits).
ENV_DISABLE_SIMD = "WARPLOAD_DISABLE_SIMD"
# from_pretrained's zero_copy= when it is not passed (engine/mapped.py): auto (default; CPU parameters view
# the mapped checkpoint when no conversion is needed), 0 (owned copies), 1 (map every tensor or raise).
ENV_ZERO_COPY = "WARPLOAD_ZERO_COPY"
# zero_copy="auto" maps a checkpoint file only when at least this share of it is in the page cache.
# Measured on GPT-2 medium (1.42 GB), load + first forward: warm, mapped 0.17 s vs owned copies
# 0.46 s; cold, owned copies (parallel pread into the parameters) 0.74 s vs mapped 0.95 s. The
# engine (csrc/io.h choose_read_mode) counts a file below it as cold too: conversions and GPU loads
# then read it with pread, so the kernel reads ahead in large requests, instead of page-faulting
# through the mapping.
MAP_WARM_FRACTION = 0.9
ZERO_COPY_VALUES = {"auto": "auto", "1": True, "true": True, "0": False, "false": False}

READ_METHODS = {"auto": 0, "mmap": 1, "pread": 2}

# Loading to a GPU (engine/cuda.py, csrc/cuda.cpp). The CUDA runtime is dlopen'ed at run
# time: WARPLOAD_CUDA_RUNTIME names the libcudart.so to use (tests point it at a fake runtime);
# unset, the one torch loaded or ships is found. The pinned ring holds WARPLOAD_CUDA_BUFFERS
# buffers of up to WARPLOAD_CUDA_BUFFER_MB MiB each, smaller when the plan is smaller.
ENV_CUDA_RUNTIME = "WARPLOAD_CUDA_RUNTIME"
ENV_CUDA_BUFFERS = "WARPLOAD_CUDA_BUFFERS"
ENV_CUDA_BUFFER_MB = "WARPLOAD_CUDA_BUFFER_MB"
CUDA_BUFFERS = 8
CUDA_BUFFER_MB = 32
# Streams the ring's copies alternate over: enough to keep the GPU's copy engines busy.
CUDA_STREAMS = 4


def add_variant(name: str, variant: Optional[str]) -> str:
    """model.safetensors -> model.fp16.safetensors, model.safetensors.index.json -> model.safetensors.index.fp16.json"""
    if not variant:
        return name
    stem, _, extension = name.rpartition(".")
    return f"{stem}.{variant}.{extension}"


def weight_file_names(variant: Optional[str], use_safetensors: Optional[bool]) -> list[str]:
    """The weight file names transformers 5 tries in a folder, in order: safetensors then its index, then (unless
    use_safetensors) .bin then its index, with `variant` inserted. load_checkpoint and from_pretrained both use it."""
    names = [SAFETENSORS_WEIGHTS_NAME, SAFETENSORS_INDEX_NAME] if use_safetensors is not False else []
    if not use_safetensors:
        names += [PYTORCH_WEIGHTS_NAME, PYTORCH_INDEX_NAME]
    return [add_variant(name, variant) for name in names]


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


def zero_copy() -> "str | bool":
    """from_pretrained's default zero_copy from WARPLOAD_ZERO_COPY: "auto", True or False."""
    value = os.environ.get(ENV_ZERO_COPY, "auto").lower()
    if value not in ZERO_COPY_VALUES:
        raise ValueError(f"{ENV_ZERO_COPY}={value!r}: choose auto, 1 (map every tensor) or 0 (owned copies)")
    return ZERO_COPY_VALUES[value]


def positive_int_env(name: str, default: int) -> int:
    """A positive integer from environment variable `name`, else default."""
    value = os.environ.get(name)
    if value is None:
        return default
    try:
        number = int(value)
    except ValueError:
        raise ValueError(f"{name}={value!r} is not an integer; unset it or give a positive number") from None
    if number <= 0:
        raise ValueError(f"{name}={number} must be positive; unset it or give a positive number")
    return number
