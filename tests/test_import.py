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


def test_a_load_imports_only_the_readers_of_its_formats(tmp_path):
    import torch
    from safetensors.torch import save_file

    save_file({"w": torch.ones(4)}, tmp_path / "model.safetensors")
    torch.save({"w": torch.ones(4)}, tmp_path / "model.bin")
    code = (
        "import sys, warpload\n"
        "def readers():\n"
        "    return ','.join(sorted(m.rsplit('.', 1)[1] for m in sys.modules if m.startswith('warpload.formats.')\n"
        "                           and m not in ('warpload.formats.registry', 'warpload.formats.checkpoint')))\n"
        f"warpload.load_file({str(tmp_path / 'model.safetensors')!r}); print(readers())\n"
        f"warpload.load_checkpoint({str(tmp_path / 'model.bin')!r}); print(readers())\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    # The PyTorch zip reader comes with its pickle and zip helpers; TensorFlow and Keras stay unloaded.
    assert result.stdout.split() == ["safetensors", "safetensors,torch_objects,torch_pickle,torchbin,zip_archive"]


def test_a_cpu_load_imports_no_gpu_backend(tmp_path):
    import torch
    from safetensors.torch import save_file

    save_file({"w": torch.ones(4)}, tmp_path / "model.safetensors")
    code = ("import sys, warpload\n"
            f"warpload.load_file({str(tmp_path / 'model.safetensors')!r})\n"
            "print('warpload.engine.cuda' in sys.modules, 'warpload.engine.host_fill' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["False", "False"]
