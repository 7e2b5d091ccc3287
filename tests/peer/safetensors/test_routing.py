"""The vendored tests really run warpload: during a test, safetensors' names, and the names a test module imported
from it (as the vendored modules do), are warpload's functions."""
from __future__ import annotations

import safetensors
import safetensors.torch
from safetensors import safe_open
from safetensors.torch import _find_shared_tensors, save
from safetensors.torch import load_file as load_file_pt

import warpload
from warpload.engine.shared_storage import find_shared_tensors


def test_safetensors_functions_are_warpload_s_during_a_test():
    assert safetensors.torch.load_file is warpload.load_file
    assert safetensors.torch.save_file is warpload.save_file
    assert safetensors.torch.load is warpload.load and safetensors.torch.save is warpload.save
    assert safetensors.safe_open is warpload.safe_open and safetensors.torch.safe_open is warpload.safe_open


def test_names_the_test_module_imported_are_warpload_s_too():
    assert load_file_pt is warpload.load_file and save is warpload.save and safe_open is warpload.safe_open
    assert _find_shared_tensors is find_shared_tensors
