"""Pre-quantized checkpoints are refused before a byte is read: loading their packed tensors into a plain model
would leave the quantized layers randomly initialised (GPTQ's `qweight` has no `.weight` to fill) or cast FP8
weights without their scales, and the only sign would be a line in the load report."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterable, Mapping, Optional

from ..engine.fp8 import dequantizing_fill, split_scales
from ..errors import UnsupportedFormatError
from ..plan import TensorRecord

if TYPE_CHECKING:
    from .load_state import Fill

# Methods warpload loads itself: FineGrainedFP8 checkpoints are dequantized by the engine (engine/fp8.py).
NATIVE_METHODS = ("fp8",)

# transformers 5.24's quantizers (transformers/quantizers/quantizer_*.py) and the packages each needs beside it.
_PACKAGES = {
    "gptq": "optimum gptqmodel",
    "awq": "gptqmodel accelerate",
    "bitsandbytes": "bitsandbytes accelerate",
    "compressed-tensors": "compressed-tensors",
    "fp8": "accelerate (and a CUDA or XPU device)",
    "fbgemm_fp8": "fbgemm-gpu accelerate",
    "torchao": "torchao",
    "quanto": "optimum-quanto accelerate",
    "hqq": "hqq",
    "eetq": "kernels",
    "aqlm": "aqlm",
    "vptq": "vptq",
    "higgs": "flute-kernel fast_hadamard_transform",
    "auto-round": "auto-round",
    "quark": "amd-quark",
    "mxfp4": "triton kernels",
}

# State-dict suffixes that only quantized layers store (GPTQ/AWQ packs, bitsandbytes int8 and 4-bit states,
# FP8 and compressed-tensors scales): a checkpoint holding them is quantized even if config.json does not say so.
QUANTIZED_SUFFIXES = (".qweight", ".qzeros", ".g_idx", ".weight_scale_inv", ".weight_scale", ".weight_packed",
                      ".weight_zero_point", ".SCB", ".absmax", ".quant_map", ".nested_absmax",
                      ".quant_state.bitsandbytes__nf4", ".quant_state.bitsandbytes__fp4")


def quantization_method(config: Any) -> Optional[str]:
    """The config's `quantization_config.quant_method` ("gptq", "fp8", ...), "unknown" for a quantization_config
    without one, None for a model that is not quantized."""
    quantization = getattr(config, "quantization_config", None)
    if quantization is None:
        return None
    method = quantization.get("quant_method") if isinstance(quantization, dict) else getattr(
        quantization, "quant_method", None)
    return str(getattr(method, "value", method) or "unknown")


def refuse_quantized_config(config: Any, where: str) -> None:
    """Raises UnsupportedFormatError when `config` (read from `where`) describes a pre-quantized checkpoint."""
    method = quantization_method(config)
    if method is None or method in NATIVE_METHODS:
        return
    needs = _PACKAGES.get(method)
    install = f" (it needs `pip install {needs}`)" if needs else ""
    raise UnsupportedFormatError(
        f"{where}: config.json has quantization_config with quant_method={method!r}. warpload does not dequantize "
        f"{method} checkpoints yet, and loading the packed tensors as plain weights would leave the quantized layers "
        "randomly initialised. Load this checkpoint with transformers.AutoModelForCausalLM.from_pretrained, which "
        f"runs its {method} quantizer{install}.", path=where)


def refuse_quantized_tensors(names: Iterable[str], where: str) -> None:
    """Raises UnsupportedFormatError when the checkpoint holds tensors only quantized layers store, naming them:
    the second guard, for a quantized checkpoint whose config.json lost its quantization_config."""
    quantized = sorted(name for name in names if name.endswith(QUANTIZED_SUFFIXES))
    if not quantized:
        return
    shown = ", ".join(repr(name) for name in quantized[:3]) + (" ..." if len(quantized) > 3 else "")
    raise UnsupportedFormatError(
        f"{where}: holds {len(quantized)} tensor(s) that only quantized layers store ({shown}), but config.json "
        "has no quantization_config. Loading them as plain weights would leave those layers randomly initialised. "
        "Use the repository's original config.json (with its quantization_config) and load it with "
        "transformers.AutoModelForCausalLM.from_pretrained.", path=where, tensor=quantized[0])


def dequantized_sources(config: Any, sources: Mapping[str, Any], fill: "Fill",
                        where: str) -> tuple[Mapping[str, Any], "Fill"]:
    """For an FP8 checkpoint (quant_method "fp8"): the sources without their scale tensors, and a fill that
    dequantizes each scaled weight into its parameter; other checkpoints pass through unchanged."""
    if quantization_method(config) != "fp8":
        return sources, fill
    if not isinstance(sources, Mapping) or not all(isinstance(s, TensorRecord) for s in sources.values()):
        raise UnsupportedFormatError(f"{where}: an FP8 checkpoint is dequantized from its files; warpload cannot "
                                     "dequantize a state_dict= or a TensorFlow checkpoint: pass the folder")
    kept, scales = split_scales(sources)
    return kept, dequantizing_fill(fill, scales)
