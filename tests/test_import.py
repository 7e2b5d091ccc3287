"""`import warpload` stays cheap: no torch, numpy, huggingface_hub or C++ engine until they are needed."""
from __future__ import annotations

import subprocess
import sys


def test_import_loads_no_heavy_modules():
    code = (
        "import sys, warpload\n"
        "heavy = [m for m in ('torch', 'numpy', 'huggingface_hub', 'safetensors', 'warpload._core')\n"
        "         if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == ""


def test_public_names_resolve_lazily():
    code = "import warpload, sys; f = warpload.load_file; print('torch' in sys.modules, callable(f))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["False", "True"]
