"""Rotary position embeddings: inverse frequencies per rope_type (transformers' formulas, op for op) and cos/sin."""
from __future__ import annotations

import math
from typing import Any, Callable, Optional, Union

import torch
from torch import nn

from .config import PretrainedConfig

SeqLen = Optional[Union[int, torch.Tensor]]


def _head_dim(config: PretrainedConfig) -> int:
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


def _rotary_dim(config: PretrainedConfig) -> int:
    return int(_head_dim(config) * config.rope_parameters.get("partial_rotary_factor", 1.0))


def _base_frequencies(base: Any, dim: int, device: Any) -> torch.Tensor:
    return 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.int64).to(device=device, dtype=torch.float) / dim))


def _default(config: PretrainedConfig, device: Any, seq_len: SeqLen) -> tuple[torch.Tensor, float]:
    # transformers' compute_default_rope_parameters rotates the whole head (no partial_rotary_factor).
    return _base_frequencies(config.rope_parameters["rope_theta"], _head_dim(config), device), 1.0


def _linear(config: PretrainedConfig, device: Any, seq_len: SeqLen) -> tuple[torch.Tensor, float]:
    params = config.rope_parameters
    inv_freq = _base_frequencies(params["rope_theta"], _rotary_dim(config), device)
    inv_freq /= params["factor"]
    return inv_freq, 1.0


def _dynamic(config: PretrainedConfig, device: Any, seq_len: SeqLen) -> tuple[torch.Tensor, float]:
    params = config.rope_parameters
    dim = _rotary_dim(config)
    factor = params["factor"]
    max_positions = config.max_position_embeddings
    if seq_len is None:
        seq_len = max_positions
    elif isinstance(seq_len, torch.Tensor):
        seq_len = torch.maximum(seq_len, torch.tensor(max_positions, dtype=seq_len.dtype, device=seq_len.device))
    else:
        seq_len = max(seq_len, max_positions)
    base = params["rope_theta"] * ((factor * seq_len / max_positions) - (factor - 1)) ** (dim / (dim - 2))
    return _base_frequencies(base, dim, device), 1.0


def _yarn(config: PretrainedConfig, device: Any, seq_len: SeqLen) -> tuple[torch.Tensor, float]:
    params = config.rope_parameters
    base = params["rope_theta"]
    dim = _rotary_dim(config)
    original_max = params["original_max_position_embeddings"]
    factor = params["factor"]
    if factor is None:
        factor = config.max_position_embeddings / original_max

    def mscale_of(scale: float, mscale: float = 1) -> float:
        return 1.0 if scale <= 1 else 0.1 * mscale * math.log(scale) + 1.0

    attention_factor = params.get("attention_factor")
    if attention_factor is None:
        mscale, mscale_all_dim = params.get("mscale"), params.get("mscale_all_dim")
        if mscale and mscale_all_dim:
            attention_factor = float(mscale_of(factor, mscale) / mscale_of(factor, mscale_all_dim))
        else:
            attention_factor = mscale_of(factor)
    beta_fast = params.get("beta_fast") or 32
    beta_slow = params.get("beta_slow") or 1

    def correction_dim(rotations: float) -> float:
        return (dim * math.log(original_max / (rotations * 2 * math.pi))) / (2 * math.log(base))

    low, high = correction_dim(beta_fast), correction_dim(beta_slow)
    if params.get("truncate", True):
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, dim - 1)
    if low == high:
        high += 0.001  # the ramp would divide by zero
    ramp = torch.clamp((torch.arange(dim // 2, dtype=torch.float32) - low) / (high - low), 0, 1)
    position_frequencies = base ** (torch.arange(0, dim, 2).to(device=device, dtype=torch.float) / dim)
    extrapolation = 1.0 / position_frequencies
    interpolation = 1.0 / (factor * position_frequencies)
    extrapolation_factor = 1 - ramp.to(device=device, dtype=torch.float)
    inv_freq = interpolation * (1 - extrapolation_factor) + extrapolation * extrapolation_factor
    return inv_freq, attention_factor


def _llama3(config: PretrainedConfig, device: Any, seq_len: SeqLen) -> tuple[torch.Tensor, float]:
    params = config.rope_parameters
    inv_freq = _base_frequencies(params["rope_theta"], _rotary_dim(config), device)
    factor, low_factor, high_factor = params["factor"], params["low_freq_factor"], params["high_freq_factor"]
    old_context = params["original_max_position_embeddings"]
    low_wavelen, high_wavelen = old_context / low_factor, old_context / high_factor
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > low_wavelen, inv_freq / factor, inv_freq)
    smooth = (old_context / wavelen - low_factor) / (high_factor - low_factor)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    is_medium = ~(wavelen < high_wavelen) * ~(wavelen > low_wavelen)
    return torch.where(is_medium, smoothed, scaled), 1.0


ROPE_TYPES: dict[str, Callable[[PretrainedConfig, Any, SeqLen], tuple[torch.Tensor, float]]] = {
    "default": _default, "linear": _linear, "dynamic": _dynamic, "yarn": _yarn, "llama3": _llama3,
}


def inverse_frequencies(config: PretrainedConfig, device: Any = None,
                        seq_len: SeqLen = None) -> tuple[torch.Tensor, float]:
    """RoPE inverse frequencies (float32) and the cos/sin scale for `config.rope_parameters`."""
    return ROPE_TYPES[config.rope_parameters["rope_type"]](config, device, seq_len)


class RotaryEmbedding(nn.Module):
    """cos/sin tables for positions, recomputed as the sequence grows for `dynamic` RoPE (transformers' rule)."""

    def __init__(self, config: PretrainedConfig) -> None:
        super().__init__()
        self.config = config
        self.rope_type = config.rope_parameters["rope_type"]
        self.max_seq_len_cached = self.original_max_seq_len = config.max_position_embeddings
        device = torch.empty(0).device
        if device.type == "meta":
            # Built on meta by from_pretrained, which calls reset_buffers on the real device. Computing
            # here would run meta arithmetic through torch._refs, whose first use imports torch._dynamo:
            # 1.0 s of a fresh process's TinyLlama load on the 2-core VM.
            inv_freq, self.attention_scaling = torch.empty(0), 1.0
        else:
            inv_freq, self.attention_scaling = inverse_frequencies(config, device)
        self.register_buffer("inv_freq", inv_freq, persistent=False)
        self.register_buffer("original_inv_freq", inv_freq.clone(), persistent=False)

    def reset_buffers(self, device: Any) -> None:
        """Computes the frequency buffers on `device` (checkpoints do not hold them; the model is built on meta)."""
        inv_freq, self.attention_scaling = inverse_frequencies(self.config, torch.device(device))
        self.inv_freq = inv_freq
        self.original_inv_freq = inv_freq.clone()
        self.max_seq_len_cached = self.original_max_seq_len

    def _update_dynamic(self, position_ids: torch.Tensor) -> None:
        seq_len = torch.max(position_ids) + 1
        if seq_len > self.max_seq_len_cached:
            inv_freq, self.attention_scaling = inverse_frequencies(self.config, position_ids.device, seq_len)
            self.inv_freq = inv_freq
            self.max_seq_len_cached = seq_len
        if seq_len < self.original_max_seq_len and self.max_seq_len_cached > self.original_max_seq_len:
            self.inv_freq = self.original_inv_freq.to(position_ids.device)
            self.max_seq_len_cached = self.original_max_seq_len

    def forward(self, x: torch.Tensor, position_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.rope_type == "dynamic":
            self._update_dynamic(position_ids)
        freqs = position_ids[..., None].float() * self.inv_freq.to(device=x.device, dtype=torch.float)
        emb = torch.cat((freqs, freqs), dim=-1)
        cos = emb.cos() * self.attention_scaling
        sin = emb.sin() * self.attention_scaling
        return cos.to(dtype=x.dtype), sin.to(dtype=x.dtype)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def apply_rotary(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor,
                 sin: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotates queries and keys (batch, heads, seq, head_dim) by position."""
    cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
    return (q * cos) + (rotate_half(q) * sin), (k * cos) + (rotate_half(k) * sin)
