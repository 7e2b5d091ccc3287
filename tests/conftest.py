"""Shared test helpers: raw safetensors writers and tensors of every dtype safetensors supports."""
from __future__ import annotations

import io
import json
import os
import struct
from pathlib import Path

import pytest
import torch

FIXTURES = Path(__file__).resolve().parent / "fixtures"

# Every safetensors dtype that torch 2.13 and safetensors.torch.save_file both handle.
SAVEABLE_DTYPES = [
    torch.bool, torch.uint8, torch.int8, torch.int16, torch.uint16, torch.int32, torch.uint32,
    torch.int64, torch.uint64, torch.float16, torch.bfloat16, torch.float32, torch.float64,
    torch.complex64, torch.float8_e4m3fn, torch.float8_e5m2, torch.float8_e8m0fnu,
    torch.float8_e4m3fnuz, torch.float8_e5m2fnuz,
]


def random_tensor(shape, dtype: torch.dtype, seed: int = 0) -> torch.Tensor:
    """Random bit patterns of any dtype (NaNs included for floats): what a loader must copy exactly."""
    generator = torch.Generator().manual_seed(seed)
    itemsize = torch.empty((), dtype=dtype).element_size()
    count = 1
    for dim in shape:
        count *= dim
    raw = torch.randint(0, 256, (count * itemsize,), dtype=torch.uint8, generator=generator)
    if dtype == torch.bool:
        return (raw % 2).bool().reshape(shape)
    return raw.view(dtype).reshape(shape)


def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal dtype, shape and bytes (so NaNs compare equal and -0.0 differs from 0.0)."""
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if not a.numel():
        return True
    return a.contiguous().view(-1).view(torch.uint8).equal(b.contiguous().view(-1).view(torch.uint8))


def write_safetensors(path: os.PathLike, header: dict, data: bytes, *, pad_to: int = 8) -> str:
    """Writes header JSON (padded with spaces) and data exactly as given: valid or not."""
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % pad_to)
    Path(path).write_bytes(struct.pack("<Q", len(text)) + text + data)
    return os.fspath(path)


@pytest.fixture
def write_raw(tmp_path):
    counter = iter(range(10**6))

    def write(header: dict, data: bytes, **kwargs) -> str:
        return write_safetensors(tmp_path / f"raw{next(counter)}.safetensors", header, data, **kwargs)

    return write


def assert_same_state(loaded: dict, expected: dict, convert=None) -> None:
    """Same names, same file order, same bits (after `convert`, e.g. a dtype change, of expected).

    Empty tensors share an offset and safetensors orders such ties by hash, so they are left out
    of the order check.
    """
    assert set(loaded) == set(expected)
    non_empty = [name for name in expected if expected[name].numel()]
    assert [name for name in loaded if loaded[name].numel()] == non_empty
    for name, tensor in expected.items():
        assert same_bits(loaded[name], convert(tensor) if convert else tensor), name


class Terminal(io.StringIO):
    """A captured stream that says it is a terminal, for the progress lines that only show on one."""

    def isatty(self) -> bool:
        return True


needs_proc_maps = pytest.mark.skipif(not os.path.exists("/proc/self/maps"), reason="needs Linux's /proc/self/maps")


def mapping_of(address: int) -> tuple[str, int, int]:
    """(path or "", start, end) of the /proc/self/maps region holding address."""
    with open("/proc/self/maps") as handle:
        for line in handle:
            fields = line.split()
            start, end = (int(part, 16) for part in fields[0].split("-"))
            if start <= address < end:
                return (fields[5] if len(fields) > 5 else ""), start, end
    raise AssertionError(f"address {address:#x} is in no mapping")
