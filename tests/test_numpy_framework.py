"""framework="np": load_file and safe_open return numpy arrays equal to safetensors.numpy's, without importing
torch; bfloat16 and float8 come as ml_dtypes arrays, or a clear error without ml_dtypes."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import ml_dtypes
import numpy as np
import pytest
import safetensors.numpy
import torch
from safetensors.torch import save_file

import warpload
from warpload.errors import UnsupportedDtypeError

NUMPY_DTYPES = [np.float64, np.float32, np.float16, np.int64, np.int32, np.int16, np.int8, np.uint8, np.uint16,
                np.uint32, np.uint64, np.bool_, np.complex64]


@pytest.fixture
def numpy_file(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {f"t{index}": (rng.standard_normal((3, 5)) * 50).astype(dtype)
              for index, dtype in enumerate(NUMPY_DTYPES)}
    arrays["scalar"] = np.array(3.5, dtype=np.float32)
    arrays["empty"] = np.zeros((0, 4), dtype=np.float32)
    path = tmp_path / "numpy.safetensors"
    safetensors.numpy.save_file(arrays, str(path))
    return path


@pytest.fixture
def low_precision_file(tmp_path):
    base = torch.linspace(-3, 3, 24).reshape(4, 6)
    tensors = {"bf16": base.to(torch.bfloat16), "e4m3": base.to(torch.float8_e4m3fn),
               "e5m2": base.to(torch.float8_e5m2), "f32": base}
    path = tmp_path / "low.safetensors"
    save_file(tensors, str(path))
    return path, tensors


@pytest.mark.parametrize("zero_copy", [False, True])
def test_load_file_equals_safetensors_numpy(numpy_file, zero_copy):
    expected = safetensors.numpy.load_file(str(numpy_file))
    loaded = warpload.load_file(numpy_file, framework="np", zero_copy=zero_copy)
    assert list(loaded) == list(expected)
    for name, array in expected.items():
        assert isinstance(loaded[name], np.ndarray)
        assert loaded[name].dtype == array.dtype and loaded[name].shape == array.shape, name
        np.testing.assert_array_equal(loaded[name], array)


def test_arrays_are_writable_and_private(numpy_file):
    loaded = warpload.load_file(numpy_file, framework="numpy", zero_copy=True)
    loaded["t1"][0, 0] = 12345.0
    assert safetensors.numpy.load_file(str(numpy_file))["t1"][0, 0] != 12345.0


def test_safe_open_numpy(numpy_file):
    expected = safetensors.numpy.load_file(str(numpy_file))
    with warpload.safe_open(numpy_file, framework="np") as handle:
        assert handle.keys() == sorted(expected)
        np.testing.assert_array_equal(handle.get_tensor("t0"), expected["t0"])
        piece = handle.get_slice("t1")[1:, ::2]
        assert isinstance(piece, np.ndarray) and piece.flags["C_CONTIGUOUS"]
        np.testing.assert_array_equal(piece, expected["t1"][1:, ::2])


def test_bfloat16_and_float8_as_ml_dtypes(low_precision_file):
    path, tensors = low_precision_file
    loaded = warpload.load_file(path, framework="np")
    assert loaded["bf16"].dtype == ml_dtypes.bfloat16
    assert loaded["e4m3"].dtype == ml_dtypes.float8_e4m3fn
    assert loaded["e5m2"].dtype == ml_dtypes.float8_e5m2
    for name, tensor in tensors.items():
        # Same bits as torch's tensor: compare the raw bytes.
        assert loaded[name].tobytes() == tensor.contiguous().view(torch.uint8).numpy().tobytes(), name


def test_dtype_conversion_to_numpy(low_precision_file):
    path, tensors = low_precision_file
    loaded = warpload.load_file(path, framework="np", dtype=np.float32)
    for name, tensor in tensors.items():
        np.testing.assert_array_equal(loaded[name], tensor.to(torch.float32).numpy())
    as_bf16 = warpload.load_file(path, framework="np", dtype="bfloat16")
    assert as_bf16["f32"].tobytes() == tensors["f32"].to(torch.bfloat16).view(torch.uint16).numpy().tobytes()


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PYTHONWARNINGS": "ignore"})


def test_numpy_load_never_imports_torch(numpy_file, low_precision_file):
    result = _run(f"""
        import sys, warpload
        arrays = warpload.load_file({str(numpy_file)!r}, framework="np")
        low = warpload.load_file({str(low_precision_file[0])!r}, framework="np")
        with warpload.safe_open({str(numpy_file)!r}, framework="np") as f:
            f.get_tensor("t0"); f.get_slice("t1")[0]
        print(len(arrays), low["bf16"].dtype, low["bf16"].shape, "torch" in sys.modules)
    """)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["15", "bfloat16", "(4,", "6)", "False"]


def test_without_ml_dtypes_bfloat16_is_a_clear_error(low_precision_file):
    result = _run(f"""
        import sys
        sys.modules["ml_dtypes"] = None  # as if it were not installed
        import warpload
        from warpload.errors import UnsupportedDtypeError
        try:
            warpload.load_file({str(low_precision_file[0])!r}, framework="np")
        except UnsupportedDtypeError as err:
            print(err)
    """)
    assert result.returncode == 0, result.stderr
    assert "BF16 needs the ml_dtypes package" in result.stdout and "pip install ml-dtypes" in result.stdout


def test_unusable_framework_and_device_are_refused(numpy_file):
    with pytest.raises(ValueError, match="framework='tf'"):
        warpload.load_file(numpy_file, framework="tf")
    with pytest.raises(ValueError, match="live on the CPU"):
        warpload.safe_open(numpy_file, framework="np", device="cuda:0")
    with pytest.raises(UnsupportedDtypeError, match="for framework='np'"):
        warpload.load_file(numpy_file, framework="np", dtype=object)
