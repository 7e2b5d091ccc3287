"""Runs safetensors' own tests against warpload: its loading and saving functions are routed to warpload's."""
from __future__ import annotations

import safetensors
import safetensors.numpy
import safetensors.torch
import pytest

import warpload
from warpload.engine.shared_storage import find_shared_tensors

# safetensors' functions, by name in safetensors.torch, and warpload's drop-in for each.
ROUTED = {
    "load_file": warpload.load_file,
    "load": warpload.load,
    "save_file": warpload.save_file,
    "save": warpload.save,
    "safe_open": warpload.safe_open,
    "_find_shared_tensors": find_shared_tensors,
}
ORIGINALS = {id(getattr(safetensors.torch, name)): name for name in ROUTED}


def load_file_np(filename, *, backend: str = "mmap"):
    """safetensors.numpy.load_file, as warpload serves it."""
    return warpload.load_file(filename, framework="np", backend=backend)


# safetensors.numpy's readers (its writers and load(bytes) stay safetensors': warpload writes torch tensors).
ROUTED_NUMPY = {"load_file": load_file_np}
ORIGINALS_NUMPY = {id(getattr(safetensors.numpy, name)): name for name in ROUTED_NUMPY}

SKIPS = {
    "test_simple.py::ErrorsTestCase::test_file_not_found": "asserts safetensors' message \"No such file or "
        "directory: notafile\" (a FileNotFoundError without errno); warpload's FileNotFoundError carries errno, "
        "strerror and filename, so it reads \"[Errno 2] No such file or directory: 'notafile'\" as open()'s does "
        "(tests/test_safetensors_compat.py)",
    "test_simple.py::ReadmeTestCase::test_exception": "tests safetensors' low-level TensorSpec / serialize API of its "
                                                      "Rust binding, which warpload does not replace",
}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        reason = next((why for test, why in SKIPS.items() if item.nodeid.endswith(test)), None)
        if reason is not None:
            item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(autouse=True)
def routed_to_warpload(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    """safetensors' functions are warpload's for the test, also under the names its module imported them as
    (`from safetensors.torch import load_file as load_file_pt`); the test runs in a fresh folder with tests/data."""
    for name, replacement in ROUTED.items():
        monkeypatch.setattr(safetensors.torch, name, replacement)
    for name, replacement in ROUTED_NUMPY.items():
        monkeypatch.setattr(safetensors.numpy, name, replacement)
    monkeypatch.setattr(safetensors, "safe_open", warpload.safe_open)
    for attribute, value in list(vars(request.module).items()):
        name = ORIGINALS.get(id(value))
        if name is None and value is safetensors.safe_open:
            name = "safe_open"
        if name is not None:
            monkeypatch.setattr(request.module, attribute, ROUTED[name])
        elif id(value) in ORIGINALS_NUMPY:
            monkeypatch.setattr(request.module, attribute, ROUTED_NUMPY[ORIGINALS_NUMPY[id(value)]])
    (tmp_path / "tests" / "data").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
