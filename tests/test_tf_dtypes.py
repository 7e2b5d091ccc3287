"""Every TensorFlow DataType in a bundle: it comes back as the torch dtype holding its bytes, or it is named in
one UnsupportedDtypeError (and skip_unsupported=True leaves it out)."""
from __future__ import annotations

import re

import numpy as np
import pytest
import torch

import warpload
from conftest import random_tensor, same_bits
from tf_bundle_writer import entry_proto, header_proto, masked_crc, sstable
from warpload.errors import UnsupportedDtypeError
from warpload.formats.tf_bundle import TF_DTYPE_NAMES, read_tensor_bundle

# TF DataType (tensorflow/core/framework/types.proto) -> the torch dtype whose bytes TF's are, or words of the
# reason the error gives. Written out by hand, not derived from warpload's tables, so that both must agree.
LOADED = {
    1: torch.float32, 2: torch.float64, 3: torch.int32, 4: torch.uint8, 5: torch.int16, 6: torch.int8,
    8: torch.complex64, 9: torch.int64, 10: torch.bool, 14: torch.bfloat16, 17: torch.uint16, 18: torch.complex128,
    19: torch.float16, 22: torch.uint32, 23: torch.uint64, 24: torch.float8_e5m2, 25: torch.float8_e4m3fn,
    26: torch.float8_e4m3fnuz, 28: torch.float8_e5m2fnuz,
}
REFUSED = {
    0: "no dtype set", 7: "strings", 11: "quantized", 12: "quantized", 13: "quantized", 15: "quantized",
    16: "quantized", 20: "resource handle", 27: "float8_e4m3b11fnuz", 29: "no int4", 30: "no uint4", 31: "no int2",
    32: "no uint2", 33: "float4_e2m1fn_x2 packs two",
}
REFERENCE_TYPES = range(101, 134)  # DT_FLOAT_REF .. DT_FLOAT4_E2M1FN_REF: graph-only, never saved
LEFT_OUT = {21: "DT_VARIANT"}  # dataset iterators: not tensors, always left out without a word
UNKNOWN = 77


def test_the_table_covers_every_datatype_tensorflow_defines():
    assert set(TF_DTYPE_NAMES) == set(LOADED) | set(REFUSED) | set(REFERENCE_TYPES) | set(LEFT_OUT)
    assert TF_DTYPE_NAMES[118] == "DT_COMPLEX128_REF" and TF_DTYPE_NAMES[33] == "DT_FLOAT4_E2M1FN"


def write_entries(prefix, entries: dict[str, tuple[int, tuple[int, ...], bytes]]) -> str:
    """A bundle of raw (TF DataType code, shape, bytes) entries, laid out as TF's BundleWriter does."""
    data, items = bytearray(), [(b"", header_proto())]
    for name, (code, shape, payload) in entries.items():
        items.append((name.encode(), entry_proto(code, shape, offset=len(data), size=len(payload),
                                                 crc=masked_crc(payload))))
        data += payload
    with open(f"{prefix}.index", "wb") as handle:
        handle.write(sstable(sorted(items)))
    with open(f"{prefix}.data-00000-of-00001", "wb") as handle:
        handle.write(bytes(data))
    return str(prefix)


def expected_tensor(code: int) -> torch.Tensor:
    # Odd shapes, so values sit at unaligned offsets after the one-byte pad the bundle starts with.
    return random_tensor((3, 5), LOADED[code], seed=code)


def tensor_bytes(tensor: torch.Tensor) -> bytes:
    return tensor.contiguous().view(-1).view(torch.uint8).numpy().tobytes()


@pytest.mark.parametrize("code", sorted(LOADED), ids=lambda code: TF_DTYPE_NAMES[code])
@pytest.mark.parametrize("zero_copy", [False, True])
def test_loadable_datatype_comes_back_bit_exact(tmp_path, code, zero_copy):
    expected = expected_tensor(code)
    entries = {"pad": (4, (1,), b"\x07"), "t": (code, (3, 5), tensor_bytes(expected))}
    loaded = warpload.load_checkpoint(write_entries(tmp_path / "b", entries), zero_copy=zero_copy)
    assert same_bits(loaded["t"], expected)


@pytest.mark.parametrize("code", sorted(REFUSED) + [101, 118, 133, UNKNOWN],
                         ids=lambda code: TF_DTYPE_NAMES.get(code, f"DataType {code}"))
def test_other_datatypes_are_named_in_one_error_and_skip_unsupported_leaves_them_out(tmp_path, code):
    keep = torch.arange(4, dtype=torch.float32)
    prefix = write_entries(tmp_path / "b", {"keep": (1, (4,), tensor_bytes(keep)), "odd": (code, (2,), b"\x01\x02")})
    reason = REFUSED.get(code, "reference type" if code in REFERENCE_TYPES else "not a DataType")
    name = TF_DTYPE_NAMES.get(code, f"DataType {code}")
    with pytest.raises(UnsupportedDtypeError, match=rf"'odd' \({name}: [^)]*{reason}.*skip_unsupported=True"):
        warpload.load_checkpoint(prefix)
    for load in (lambda: warpload.load_checkpoint(prefix, skip_unsupported=True),
                 lambda: warpload.engine.materialize(warpload.plan.plan_load(
                     read_tensor_bundle(prefix, skip_unsupported=True)))):
        loaded = load()
        assert list(loaded) == ["keep"] and same_bits(loaded["keep"], keep)


def test_every_refused_tensor_is_named_in_the_same_error(tmp_path):
    entries = {f"t{code:03d}": (code, (1,), b"\x00") for code in sorted(REFUSED) + list(REFERENCE_TYPES)}
    entries.update({"variant": (21, (), b"")})
    prefix = write_entries(tmp_path / "b", entries)
    with pytest.raises(UnsupportedDtypeError) as raised:
        warpload.load_checkpoint(prefix)
    message = str(raised.value)
    count = len(REFUSED) + len(REFERENCE_TYPES)
    assert f"{count} tensor(s) have no torch dtype" in message and f"and {count - 10} more" in message
    assert re.findall(r"'(t\d+)'", message) == sorted(entries)[:10]
    assert warpload.load_checkpoint(prefix, skip_unsupported=True) == {}


def test_tensorflows_float8_and_bfloat16_bits_mean_what_torchs_do(tmp_path):
    """TF's numpy types for these are ml_dtypes' (tf.float8_e4m3fnuz.as_numpy_dtype is ml_dtypes.float8_e4m3fnuz):
    every bit pattern, stored under the TF DataType and loaded by warpload, has the value ml_dtypes gives it."""
    ml_dtypes = pytest.importorskip("ml_dtypes", reason="ml_dtypes (TensorFlow's float8 types) is in the test extra")
    names = {14: "bfloat16", 24: "float8_e5m2", 25: "float8_e4m3fn", 26: "float8_e4m3fnuz", 28: "float8_e5m2fnuz"}
    patterns = {code: np.arange(2 ** 16 if code == 14 else 2 ** 8).astype("<u2" if code == 14 else "u1")
                for code in names}
    prefix = write_entries(tmp_path / "b", {names[code]: (code, bits.shape, bits.tobytes())
                                            for code, bits in patterns.items()})
    loaded = warpload.load_checkpoint(prefix)
    for code, name in names.items():
        assert loaded[name].dtype == LOADED[code]
        tensorflows = patterns[code].view(getattr(ml_dtypes, name)).astype(np.float32)
        assert np.array_equal(loaded[name].float().numpy(), tensorflows, equal_nan=True), name
