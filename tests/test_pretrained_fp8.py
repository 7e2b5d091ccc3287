"""FP8 checkpoints (float8_e4m3fn weights with weight_scale_inv scale grids) load natively: the engine
dequantizes them into the parameters bit for bit as transformers' FineGrainedFP8 dequantization does."""
from __future__ import annotations

import json

import pytest
import torch
import transformers
from safetensors.torch import save_file

import warpload
from model_checkpoints import left_padded_prompts, tiny_transformers_model
from warpload._native import core
from warpload.engine.host import tensor_region
from warpload.errors import CheckpointError

pytest.importorskip("accelerate", reason="transformers' FP8 quantizer, the oracle here, needs accelerate")


def _bits(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.contiguous().view({1: torch.uint8, 2: torch.int16, 4: torch.int32}[tensor.element_size()])


def quantize(weight: torch.Tensor, block: tuple[int, int] | None, e8m0: bool = False):
    """(float8 weight, scales) as FP8 exporters write them: per block of `block`, or one scale per tensor."""
    rows, cols = weight.shape
    if block is None:
        scale = (weight.abs().amax() / 448.0).reshape(1)
        return (weight / scale).to(torch.float8_e4m3fn), scale.float()
    grid = weight.reshape(rows // block[0], block[0], cols // block[1], block[1])
    scale = (grid.abs().amax(dim=(1, 3)).clamp(min=1e-12) / 448.0).float()
    if e8m0:  # power-of-two scales stored as biased exponents (MXFP8 style)
        exponent = torch.ceil(torch.log2(scale)).clamp(-127, 127)
        scale, stored = exponent.exp2(), (exponent + 127).to(torch.uint8)
    quantized = (grid / scale[:, None, :, None]).reshape(rows, cols).to(torch.float8_e4m3fn)
    return quantized, (stored if e8m0 else scale)


def write_fp8_checkpoint(folder, arch: str = "llama", block=(16, 16), e8m0: bool = False):
    model = tiny_transformers_model(arch)
    model.save_pretrained(folder)
    tensors = {}
    for name, tensor in model.state_dict().items():
        if name.endswith("proj.weight"):
            tensors[name], tensors[name + "_scale_inv"] = quantize(tensor, block, e8m0)
        else:
            tensors[name] = tensor.to(torch.bfloat16)
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    config = json.loads((folder / "config.json").read_text())
    config["quantization_config"] = {"quant_method": "fp8", "activation_scheme": "dynamic",
                                     **({"weight_block_size": list(block)} if block else {})}
    config["dtype"] = "bfloat16"
    (folder / "config.json").write_text(json.dumps(config))
    return folder


@pytest.mark.parametrize("dtype", [None, torch.float32, torch.float16], ids=["auto-bf16", "fp32", "fp16"])
@pytest.mark.parametrize(("block", "e8m0"), [((16, 16), False), ((32, 16), False), (None, False), ((16, 32), True)],
                         ids=["block16", "block32x16", "per-tensor", "e8m0"])
def test_fp8_weights_equal_transformers_dequantization_bit_for_bit(tmp_path, block, e8m0, dtype):
    folder = write_fp8_checkpoint(tmp_path, block=block, e8m0=e8m0)
    options = {} if dtype is None else {"dtype": dtype}
    ours, info = warpload.AutoModelForCausalLM.from_pretrained(folder, output_loading_info=True, **options)
    theirs = transformers.AutoModelForCausalLM.from_pretrained(folder, **options)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert ours.dtype == theirs.dtype == (dtype or torch.bfloat16)
    theirs_state, ours_state = theirs.state_dict(), ours.state_dict()
    assert set(ours_state) == set(theirs_state)
    for name, tensor in theirs_state.items():
        assert torch.equal(_bits(ours_state[name]), _bits(tensor)), name
    ids, mask = left_padded_prompts()
    with torch.no_grad():
        torch.testing.assert_close(ours(ids, attention_mask=mask).logits, theirs(ids, attention_mask=mask).logits,
                                   rtol=0, atol=0)


def test_fp8_on_the_transformers_backend(tmp_path):
    folder = write_fp8_checkpoint(tmp_path)
    ours = warpload.AutoModelForCausalLM.from_pretrained(folder, backend="transformers")
    theirs = transformers.AutoModelForCausalLM.from_pretrained(folder)
    assert type(ours) is type(theirs)
    for name, tensor in theirs.state_dict().items():
        assert torch.equal(_bits(ours.state_dict()[name]), _bits(tensor)), name


def test_a_scale_grid_that_does_not_divide_the_weight_is_named(tmp_path):
    folder = write_fp8_checkpoint(tmp_path)
    from safetensors.torch import load_file

    tensors = load_file(folder / "model.safetensors")
    tensors["model.layers.0.mlp.up_proj.weight_scale_inv"] = torch.ones(3, 5)
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match=r"'model.layers.0.mlp.up_proj.weight'.*not divisible by scale grid"):
        warpload.AutoModelForCausalLM.from_pretrained(folder)


@pytest.mark.parametrize("dst", [torch.bfloat16, torch.float16, torch.float32])
def test_engine_kernel_equals_torch_on_every_fp8_value(dst):
    # All 256 float8 bit patterns (NaN, +-0, subnormals, the largest values) in every column block.
    weight = torch.arange(256, dtype=torch.int32).to(torch.uint8).repeat(8, 3).view(torch.float8_e4m3fn)
    scales = torch.tensor([[1.0, 2.5e-3, 3.0e38], [float("inf"), -0.5, 1e-40]], dtype=torch.float32)
    out = torch.empty(weight.shape, dtype=dst)
    core().dequantize_fp8([(weight.view(torch.uint8).numpy(), scales.numpy(), 8, 768, 2, 3, 5, tensor_region(out),
                            {torch.bfloat16: 4, torch.float16: 3, torch.float32: 2}[dst])])
    expected = (weight.float().reshape(2, 4, 3, 256) * scales[:, None, :, None]).reshape(8, 768).to(dst)
    assert torch.equal(_bits(out), _bits(expected))


def test_engine_kernel_checks_every_size_before_writing():
    weight = torch.zeros(4, 4, dtype=torch.uint8)
    out = torch.full((4, 4), 7.0)
    scales = torch.ones(1, 1)
    with pytest.raises(ValueError, match="the destination holds 32 bytes, 64 needed"):
        core().dequantize_fp8([(weight.numpy(), scales.numpy(), 4, 4, 1, 1, 5, (out.data_ptr(), 32), 2)])
    with pytest.raises(ValueError, match=r"weights hold 16 bytes, 4 x 8 need 32"):
        core().dequantize_fp8([(weight.numpy(), scales.numpy(), 4, 8, 1, 1, 5, tensor_region(out), 2)])
    with pytest.raises(ValueError, match=r"not divisible by scale grid \(3, 1\)"):
        core().dequantize_fp8([(weight.numpy(), torch.ones(3, 1).numpy(), 4, 4, 3, 1, 5, tensor_region(out), 2)])
    assert torch.equal(out, torch.full((4, 4), 7.0))
