"""Causal self-attention shared by the built-in models: the KV cache, the boolean masks and the SDPA call."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F


class KVCache:
    """Past keys and values, one (batch, kv_heads, seq, head_dim) pair per layer, grown by concatenation.

    The counterpart of transformers' DynamicCache: pass `past_key_values=` back into forward to
    decode one step at a time.
    """

    def __init__(self) -> None:
        self.keys: list[torch.Tensor] = []
        self.values: list[torch.Tensor] = []

    def get_seq_length(self, layer_idx: int = 0) -> int:
        """Tokens already cached (0 for an empty cache)."""
        return self.keys[layer_idx].shape[-2] if layer_idx < len(self.keys) else 0

    def update(self, key: torch.Tensor, value: torch.Tensor, layer_idx: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Appends this step's keys and values for a layer; returns the whole history."""
        if layer_idx == len(self.keys):
            self.keys.append(key)
            self.values.append(value)
        else:
            self.keys[layer_idx] = torch.cat([self.keys[layer_idx], key], dim=-2)
            self.values[layer_idx] = torch.cat([self.values[layer_idx], value], dim=-2)
        return self.keys[layer_idx], self.values[layer_idx]

    def reorder_cache(self, beam_idx: torch.Tensor) -> None:
        """Keeps, for each row, the history of row `beam_idx[row]` (beam search picks its survivors so).

        Each layer's tensors are replaced by one index_select, on their device: no Python per row.
        """
        for layer in range(len(self.keys)):
            index = beam_idx.to(self.keys[layer].device)
            self.keys[layer] = self.keys[layer].index_select(0, index)
            self.values[layer] = self.values[layer].index_select(0, index)

    def __len__(self) -> int:
        return len(self.keys)


def causal_mask(attention_mask: Optional[torch.Tensor], batch_size: int, q_length: int, past_length: int,
                sliding_window: Optional[int], device: torch.device) -> Optional[torch.Tensor]:
    """The (batch, 1, q, kv) boolean mask (True = attend), or None when SDPA's own causal flag is exact.

    Mirrors transformers' sdpa_mask: padding from the 2D `attention_mask` (1 = real token, covering
    past and new tokens), causality, and for sliding-window layers only the last `sliding_window`
    keys. Skipping the mask when nothing is masked lets SDPA pick its fused kernels.
    """
    kv_length = past_length + q_length
    padding = None
    if attention_mask is not None:
        padding = attention_mask.to(device=device, dtype=torch.bool)
        if padding.shape[-1] < kv_length:
            padding = F.pad(padding, (0, kv_length - padding.shape[-1]))
        padding = padding[:, :kv_length]
    window_applies = sliding_window is not None and kv_length >= sliding_window
    if not window_applies:
        no_padding = padding is None or bool(padding.all())
        if (q_length == 1 or kv_length == q_length) and no_padding:
            return None
    q_index = torch.arange(q_length, device=device)[:, None] + past_length
    kv_index = torch.arange(kv_length, device=device)[None, :]
    mask = kv_index <= q_index
    if window_applies:
        mask = mask & (kv_index > q_index - sliding_window)
    mask = mask[None, None].expand(batch_size, 1, q_length, kv_length)
    if padding is not None:
        mask = mask & padding[:, None, None, :]
    return mask


def attend(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask: Optional[torch.Tensor],
           scaling: float) -> torch.Tensor:
    """SDPA over (batch, heads, seq, head_dim) tensors; key/value may have fewer (grouped) heads.

    Returns (batch, seq, heads * head_dim).
    """
    is_causal = mask is None and query.shape[2] > 1
    grouped = key.shape[1] != query.shape[1]
    output = F.scaled_dot_product_attention(query, key, value, attn_mask=mask, is_causal=is_causal, scale=scaling,
                                            enable_gqa=grouped)
    return output.transpose(1, 2).reshape(query.shape[0], query.shape[2], -1)
