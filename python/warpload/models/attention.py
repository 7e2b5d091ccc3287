"""Causal self-attention shared by the built-in models: the KV cache, the masks, SDPA and eager attention."""
from __future__ import annotations

from typing import Any, Iterator, Optional

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

    def get_mask_sizes(self, query_length: int, layer_idx: int = 0) -> tuple[int, int]:
        """(keys attended to, position of the first): every cached token stays (transformers' DynamicLayer)."""
        return self.get_seq_length(layer_idx) + query_length, 0

    def __len__(self) -> int:
        """Layers cached so far (transformers' Cache.__len__)."""
        return len(self.keys)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, None]]:
        """(keys, values, sliding-window tensor) per layer, as transformers 5's DynamicCache iterates (no window)."""
        for key, value in zip(self.keys, self.values):
            yield key, value, None

    def to_legacy_cache(self) -> tuple[tuple[torch.Tensor, torch.Tensor], ...]:
        """The transformers 4 format: one (keys, values) pair per layer."""
        return tuple(zip(self.keys, self.values))

    @classmethod
    def from_legacy_cache(cls, past_key_values: Any) -> "KVCache":
        """A cache holding the (keys, values) pairs of a transformers 4 tuple cache (None: empty)."""
        cache = cls()
        for layer_idx, (key, value, *_) in enumerate(past_key_values or ()):
            cache.update(key, value, layer_idx)
        return cache


def causal_mask(attention_mask: Optional[torch.Tensor], batch_size: int, q_length: int, past_length: int,
                sliding_window: Optional[int], device: torch.device, *, kv_length: Optional[int] = None,
                kv_offset: int = 0, always: bool = False) -> Optional[torch.Tensor]:
    """The (batch, 1, q, kv) boolean mask (True = attend), or None when SDPA's own causal flag is exact.

    Mirrors transformers' sdpa_mask: padding from the 2D `attention_mask` (1 = real token, covering
    past and new tokens), causality, and for sliding-window layers only the last `sliding_window`
    keys. Skipping the mask when nothing is masked lets SDPA pick its fused kernels; `always` builds
    it anyway (eager attention). The keys default to every past token (kv_length = past + q); a
    cache that keeps fewer (transformers' sliding-window layers) gives their count and the position
    of the first, `kv_offset`.
    """
    if kv_length is None:
        kv_length = past_length + q_length
    padding = None
    if attention_mask is not None:
        padding = attention_mask.to(device=device, dtype=torch.bool)
        if padding.shape[-1] < kv_offset + kv_length:
            padding = F.pad(padding, (0, kv_offset + kv_length - padding.shape[-1]))
        padding = padding[:, kv_offset:kv_offset + kv_length]
    window_applies = sliding_window is not None and kv_offset + kv_length >= sliding_window
    if not window_applies and not always and kv_offset == 0:
        no_padding = padding is None or bool(padding.all())
        if (q_length == 1 or kv_length == q_length) and no_padding:
            return None
    q_index = torch.arange(q_length, device=device)[:, None] + past_length
    kv_index = torch.arange(kv_length, device=device)[None, :] + kv_offset
    mask = kv_index <= q_index
    if window_applies:
        mask = mask & (kv_index > q_index - sliding_window)
    mask = mask[None, None].expand(batch_size, 1, q_length, kv_length)
    if padding is not None:
        mask = mask & padding[:, None, None, :]
    return mask


def layer_masks(attention_mask: Optional[torch.Tensor], embeds: torch.Tensor, past_length: int, cache: Any,
                windows: list[Optional[int]], eager: bool) -> list[Optional[torch.Tensor]]:
    """Each layer's mask (`causal_mask`; additive under eager attention), built once per distinct one.

    warpload's KVCache keeps every token, so all layers of a window share one mask; another cache
    (transformers' DynamicCache, whose sliding-window layers keep fewer keys) says each layer's sizes.
    """
    batch_size, q_length = embeds.shape[:2]
    per_layer = cache is not None and not isinstance(cache, KVCache)
    built: dict[tuple[Optional[int], int, int], Optional[torch.Tensor]] = {}
    masks = []
    for layer_idx, window in enumerate(windows):
        kv_length, kv_offset = (cache.get_mask_sizes(q_length, layer_idx) if per_layer
                                else (past_length + q_length, 0))
        key = (window, kv_length, kv_offset)
        if key not in built:
            mask = causal_mask(attention_mask, batch_size, q_length, past_length, window, embeds.device,
                               kv_length=kv_length, kv_offset=kv_offset, always=eager)
            built[key] = additive_mask(mask, embeds.dtype) if eager else mask
        masks.append(built[key])
    return masks


def additive_mask(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A boolean mask as eager attention adds it: 0 where attended, the dtype's lowest value elsewhere
    (transformers' eager_mask; a fully masked row then averages its keys instead of giving NaN)."""
    return torch.where(mask, torch.zeros((), device=mask.device, dtype=dtype), torch.finfo(dtype).min)


def attend(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask: Optional[torch.Tensor],
           scaling: float, dropout: float = 0.0) -> torch.Tensor:
    """SDPA over (batch, heads, seq, head_dim) tensors; key/value may have fewer (grouped) heads.

    Returns (batch, seq, heads * head_dim).
    """
    is_causal = mask is None and query.shape[2] > 1
    grouped = key.shape[1] != query.shape[1]
    output = F.scaled_dot_product_attention(query, key, value, attn_mask=mask, is_causal=is_causal, scale=scaling,
                                            dropout_p=dropout, enable_gqa=grouped)
    return output.transpose(1, 2).reshape(query.shape[0], query.shape[2], -1)


def attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask: Optional[torch.Tensor],
              scaling: float, *, eager: bool, softmax_in_float32: bool,
              dropout: float = 0.0) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """(output, attention weights): `attend_eager` under eager attention, else `attend` and no weights."""
    if eager:
        return attend_eager(query, key, value, mask, scaling, softmax_in_float32=softmax_in_float32, dropout=dropout)
    return attend(query, key, value, mask, scaling, dropout), None


def attend_eager(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask: Optional[torch.Tensor],
                 scaling: float, *, softmax_in_float32: bool,
                 dropout: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention written out (transformers' eager_attention_forward): (output as `attend` gives it, the weights
    (batch, heads, q, kv)). `mask` is additive; the Llama family takes the softmax in float32, GPT-2 in the
    input dtype."""
    groups = query.shape[1] // key.shape[1]
    if groups > 1:
        key, value = (t.repeat_interleave(groups, dim=1) for t in (key, value))
    weights = torch.matmul(query, key.transpose(2, 3)) * scaling
    if mask is not None:
        weights = weights + mask
    if softmax_in_float32:
        weights = F.softmax(weights, dim=-1, dtype=torch.float32).to(query.dtype)
    else:
        weights = F.softmax(weights, dim=-1).type(value.dtype)
    weights = F.dropout(weights, p=dropout, training=dropout > 0)
    output = torch.matmul(weights, value).transpose(1, 2)
    return output.reshape(query.shape[0], query.shape[2], -1), weights
