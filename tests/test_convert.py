"""Tests for csrc/convert.cpp: every dtype conversion gives the same bits as torch's CPU Tensor.to."""
from __future__ import annotations

import os
import struct
import subprocess
import sys

import numpy as np
import pytest
import torch

from warpload import _core

CODES = {"F64": 1, "F32": 2, "F16": 3, "BF16": 4, "F8_E4M3": 5, "F8_E5M2": 6}
TORCH_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "F8_E4M3": torch.float8_e4m3fn,
    "F8_E5M2": torch.float8_e5m2,
}
BITS = {"F64": np.uint64, "F32": np.uint32, "F16": np.uint16, "BF16": np.uint16,
        "F8_E4M3": np.uint8, "F8_E5M2": np.uint8}
TORCH_INTS = {8: torch.int64, 4: torch.int32, 2: torch.int16, 1: torch.int8}

TARGETS = ("F64", "F32", "F16", "BF16")
SOURCES = TARGETS + ("F8_E4M3", "F8_E5M2")
PAIRS = [(src, dst) for src in SOURCES for dst in TARGETS if src != dst]
PAIR_IDS = [f"{src}-to-{dst}" for src, dst in PAIRS]

# torch's copy kernels run vectors over a tensor and finish the last few elements of each thread's
# range another way, which writes different NaN bits for F16 -> F32 (0x7FFFFFFF) and F64 -> BF16
# (0x7FC0). warpload follows the vector body, so the reference pads every piece to 64 elements
# and keeps pieces under at::internal::GRAIN_SIZE (32768) so that one thread converts each.
TORCH_PIECE = 32768
TORCH_PAD = 64


def torch_bits(src: np.ndarray, src_name: str, dst_name: str) -> np.ndarray:
    """The bits torch's vectorised Tensor.to writes for src (raw bits of src_name)."""
    out_dtype = np.dtype(BITS[dst_name])
    pieces = [np.empty(0, out_dtype)]
    for start in range(0, len(src), TORCH_PIECE):
        piece = src[start : start + TORCH_PIECE]
        padded = np.concatenate([piece, np.zeros(-len(piece) % TORCH_PAD, piece.dtype)])
        converted = torch.frombuffer(bytearray(padded.tobytes()), dtype=TORCH_DTYPES[src_name]).to(
            TORCH_DTYPES[dst_name]
        )
        pieces.append(converted.view(TORCH_INTS[out_dtype.itemsize]).numpy().view(out_dtype)[: len(piece)])
    return np.concatenate(pieces)


def warpload_bits(src: np.ndarray, src_name: str, dst_name: str, *, offset: int = 0) -> np.ndarray:
    """The bits warpload writes for src, read from a buffer that starts `offset` bytes into a bytes object."""
    buffer = memoryview(bytes(offset) + src.tobytes())[offset:]
    return np.frombuffer(_core.convert_buffer(buffer, CODES[src_name], CODES[dst_name]), BITS[dst_name])


def assert_same_bits(actual: np.ndarray, expected: np.ndarray, src: np.ndarray) -> None:
    assert actual.shape == expected.shape
    wrong = np.flatnonzero(actual != expected)
    examples = [f"src {int(src[i]):#x}: got {int(actual[i]):#x}, torch {int(expected[i]):#x}" for i in wrong[:8]]
    assert wrong.size == 0, f"{wrong.size} of {src.size} elements differ; " + "; ".join(examples)


def f64_bits(*values: float) -> list[int]:
    return [struct.unpack("<Q", struct.pack("<d", v))[0] for v in values]


def f32_bits(*values: float) -> list[int]:
    return [struct.unpack("<I", struct.pack("<f", v))[0] for v in values]


def with_negatives(bits: list[int], sign: int) -> list[int]:
    return bits + [b | sign for b in bits]


# Hand-picked values; each list also holds the same values with the sign bit set.
EDGE_BITS = {
    "F32": with_negatives(
        [
            0x00000000, 0x7F800000,  # zero, Inf
            0x7FC00000, 0x7F800001, 0x7FA12345, 0x7FFFFFFF, 0x7FC00001, 0x7F802000, 0x7F810000,  # NaNs
            0x00000001, 0x007FFFFF, 0x00800000, 0x7F7FFFFF,  # subnormal min/max, normal min/max
            0x3F808000, 0x3F818000, 0x3F808001, 0x3F807FFF,  # BF16 ties around 1 + 2^-8
            0x3F801000, 0x3F803000, 0x3F801001, 0x3F800FFF,  # F16 ties around 1 + 2^-11
            0x7F7F7FFF, 0x7F7F8000,  # below / at the tie between BF16 max and Inf
            0x477FE000, 0x477FEFFF, 0x477FF000, 0x477FF001,  # F16 max 65504 and the tie at 65520
            0x33000000, 0x33000001, 0x33800000, 0x33C00000,  # 2^-25 tie, 2^-24, 1.5 * 2^-24 tie
            0x387FC000, 0x387FE000, 0x387FFFFF, 0x38800000,  # F16 largest subnormal .. smallest normal
            0x00010000, 0x00018000, 0x0000FFFF,  # BF16 subnormals and a tie below them
        ],
        0x80000000,
    ),
    "F64": with_negatives(
        [
            0x0000000000000000, 0x7FF0000000000000,  # zero, Inf
            0x7FF8000000000000, 0x7FF0000000000001, 0x7FF4000000000000,  # NaNs: quiet, signalling
            0x7FF8123456789ABC, 0x7FFFFFFFFFFFFFFF, 0x7FF0000020000000,  # NaNs: payloads
            0x0000000000000001, 0x000FFFFFFFFFFFFF, 0x0010000000000000, 0x7FEFFFFFFFFFFFFF,
            *f64_bits(
                1 + 2**-11 + 2**-40, 1 + 2**-8 + 2**-40,  # correct rounding goes up; via float, down
                1 + 2**-11, 1 + 3 * 2**-11, 1 + 2**-8, 1 + 3 * 2**-8,  # exact ties
                1 + 2**-24, 1 + 2**-24 + 2**-50, 1 + 3 * 2**-24,  # F32 ties
                65504.0, 65519.99, 65520.0, 65536.0,  # F16 max and overflow
                3.4028234663852886e38, 3.4028235677973366e38, 3.5e38, 1e300,  # F32 max and overflow
                2**-149, 2**-150, 2**-150 * 1.0000001, 2**-126, 2**-127,  # F32 subnormals, ties
                2**-24, 2**-25, 2**-25 * 1.0000001, 2**-14, 1e-310,  # F16 subnormals, ties
            ),
        ],
        0x8000000000000000,
    ),
    "F16": with_negatives([0x0000, 0x7C00, 0x7E00, 0x7C01, 0x7D00, 0x7E55, 0x7FFF, 0x0001, 0x03FF, 0x0400, 0x7BFF],
                          0x8000),
    "BF16": with_negatives([0x0000, 0x7F80, 0x7FC0, 0x7F81, 0x7FA0, 0x7FD5, 0x7FFF, 0x0001, 0x007F, 0x0080, 0x7F7F],
                           0x8000),
    "F8_E4M3": with_negatives([0x00, 0x7F, 0x01, 0x07, 0x08, 0x7E], 0x80),
    "F8_E5M2": with_negatives([0x00, 0x7C, 0x7D, 0x7E, 0x7F, 0x01, 0x03, 0x04, 0x7B], 0x80),
}


def edge_cases(src_name: str) -> np.ndarray:
    return np.array(EDGE_BITS[src_name], dtype=BITS[src_name])


def bit_pattern_space(src_name: str) -> np.ndarray:
    """Every bit pattern of an 8- or 16-bit type; random bits and random values of wider ones."""
    bits = np.dtype(BITS[src_name])
    if bits.itemsize <= 2:
        return np.arange(1 << (8 * bits.itemsize), dtype=np.uint32).astype(bits)
    rng = np.random.default_rng(20240613)
    float_type = np.float32 if src_name == "F32" else np.float64
    # Log-uniform magnitudes from below the F32 subnormals to above the F16/BF16 maxima (and, for
    # F64, above the F32 maximum).
    top = 127 if src_name == "F32" else 140
    magnitudes = np.exp2(rng.uniform(-155, top, 100_000)) * rng.choice([-1.0, 1.0], 100_000)
    parts = [
        rng.integers(0, np.iinfo(bits).max, 200_000, dtype=bits, endpoint=True),
        rng.standard_normal(100_000).astype(float_type).view(bits),
        magnitudes.astype(float_type).view(bits),
    ]
    if src_name == "F64":
        # Floats nudged by a few units of the double's last place: F32 rounding ties and near-ties.
        on_floats = rng.standard_normal(100_000).astype(np.float32).astype(np.float64).view(bits)
        parts.append(on_floats + rng.integers(-3, 4, 100_000).astype(bits))
    return np.concatenate(parts)


@pytest.mark.parametrize(("src_name", "dst_name"), PAIRS, ids=PAIR_IDS)
def test_bit_pattern_space_matches_torch(src_name: str, dst_name: str) -> None:
    src = bit_pattern_space(src_name)
    assert_same_bits(warpload_bits(src, src_name, dst_name), torch_bits(src, src_name, dst_name), src)


@pytest.mark.parametrize(("src_name", "dst_name"), PAIRS, ids=PAIR_IDS)
def test_zeros_infs_nans_subnormals_ties_and_overflow_match_torch(src_name: str, dst_name: str) -> None:
    src = edge_cases(src_name)
    assert_same_bits(warpload_bits(src, src_name, dst_name), torch_bits(src, src_name, dst_name), src)


@pytest.mark.parametrize("n", [0, 1, 7, 8, 15, 16, 17, 33, 100])
@pytest.mark.parametrize(("src_name", "dst_name"), PAIRS, ids=PAIR_IDS)
def test_odd_lengths_from_unaligned_source_match_torch(src_name: str, dst_name: str, n: int) -> None:
    # Edge cases first so that NaNs and ties also land in the scalar tail after the SIMD blocks.
    pool = np.concatenate([edge_cases(src_name), bit_pattern_space(src_name)[:1000]])
    src = np.roll(pool, n)[:n]
    assert_same_bits(warpload_bits(src, src_name, dst_name, offset=1), torch_bits(src, src_name, dst_name), src)


def test_f64_to_half_types_rounds_via_float_like_torch() -> None:
    # Correct rounding gives 0x3C01 and 0x3F81; torch first rounds to float, landing on exact ties.
    src = np.array(f64_bits(1 + 2**-11 + 2**-40, 1 + 2**-8 + 2**-40), dtype=np.uint64)
    assert warpload_bits(src[:1], "F64", "F16").tolist() == [0x3C00]
    assert warpload_bits(src[1:], "F64", "BF16").tolist() == [0x3F80]


def test_bf16_nan_bits_depend_on_source_like_torch() -> None:
    # torch's float vector kernel writes 0xFFFF; c10::BFloat16 (used from F16 and F8) writes 0x7FC0.
    assert warpload_bits(np.array([0x7FC00000, 0xFF812345], np.uint32), "F32", "BF16").tolist() == [0xFFFF, 0xFFFF]
    assert warpload_bits(np.array([0x7E00, 0xFD00], np.uint16), "F16", "BF16").tolist() == [0x7FC0, 0x7FC0]


SCALAR_CHILD = """
import sys
import numpy as np
from warpload import _core
inputs = np.load(sys.argv[1])
outputs = {}
for key in inputs.files:
    src_code, dst_code = map(int, key.split("-"))
    outputs[key] = np.frombuffer(_core.convert_buffer(inputs[key], src_code, dst_code), np.uint8)
np.savez(sys.argv[2], **outputs)
"""


def test_scalar_path_matches_torch_when_simd_disabled(tmp_path) -> None:
    # The kernel table is chosen once per process, so the scalar path runs in a child process.
    cases = {}
    for src_name, dst_name in PAIRS:
        src = np.concatenate([edge_cases(src_name), bit_pattern_space(src_name)])
        cases[(src_name, dst_name)] = src
    inputs, outputs = tmp_path / "inputs.npz", tmp_path / "outputs.npz"
    np.savez(inputs, **{f"{CODES[s]}-{CODES[d]}": src for (s, d), src in cases.items()})
    env = dict(os.environ, WARPLOAD_DISABLE_SIMD="1")
    subprocess.run([sys.executable, "-c", SCALAR_CHILD, str(inputs), str(outputs)], env=env, check=True)
    scalar = np.load(outputs)
    for (src_name, dst_name), src in cases.items():
        got = scalar[f"{CODES[src_name]}-{CODES[dst_name]}"].view(BITS[dst_name])
        assert_same_bits(got, torch_bits(src, src_name, dst_name), src)


@pytest.mark.parametrize(
    ("src_name", "dst_name"),
    [("F32", "F32"), ("F32", "F8_E4M3"), ("BF16", "F8_E5M2"), ("F8_E4M3", "F8_E5M2"), ("F16", "Raw"), ("Raw", "F32")],
)
def test_unsupported_pair_raises_value_error_naming_both_dtypes(src_name: str, dst_name: str) -> None:
    codes = dict(CODES, Raw=0)
    with pytest.raises(ValueError) as raised:
        _core.convert_buffer(bytes(8), codes[src_name], codes[dst_name])
    assert src_name in str(raised.value) and dst_name in str(raised.value)
