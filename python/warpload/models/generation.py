"""generate() for the built-in models: greedy or sampled decoding over a KV cache, as transformers decodes."""
from __future__ import annotations

import copy
import logging
from typing import Any, Optional, Sequence, Union

import torch

from .attention import KVCache
from .config import GenerationConfig

logger = logging.getLogger(__name__)

DEFAULT_NEW_TOKENS = 20

# Fields whose non-default values ask for decoding strategies this module does not implement.
_UNSUPPORTED = {"num_beams": 1, "repetition_penalty": 1.0, "min_length": 0}


class GenerationMixin:
    """Adds `generate` to a model whose forward takes input_ids, attention_mask, position_ids,
    past_key_values, use_cache and logits_to_keep, and returns `.logits` and `.past_key_values`."""

    generation_config: GenerationConfig

    @torch.no_grad()
    def generate(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor] = None, *,
                 generation_config: Optional[GenerationConfig] = None, generator: Optional[torch.Generator] = None,
                 **kwargs: Any) -> torch.Tensor:
        """Continues each prompt row of `input_ids` (batch, seq); returns prompts and new tokens together.

        Options override `model.generation_config` as in transformers (None leaves a field as it
        is): max_new_tokens or max_length (by default 20 new tokens, up to max_position_embeddings
        in all), do_sample, temperature, top_k (50 by default, used when sampling), top_p,
        eos_token_id (int or list), pad_token_id, use_cache. Batched prompts must be left-padded,
        with `attention_mask` marking real tokens (inferred from pad_token_id when it differs from
        eos, as transformers does). Finished rows are filled with pad_token_id. Sampling draws from
        `generator`, else from torch's global generator as transformers does (same seed, same
        tokens). Raises TypeError for unknown options and NotImplementedError for beam search,
        repetition penalties and min_length (load with backend="transformers" for those).
        """
        config = copy.deepcopy(generation_config or self.generation_config)
        unknown = config.update(**{key: value for key, value in kwargs.items() if value is not None})
        if unknown:
            raise TypeError(f"generate() got unknown option(s) {sorted(unknown)}; supported: "
                            f"{', '.join(sorted(GenerationConfig.defaults))}")
        for field, neutral in _UNSUPPORTED.items():
            if getattr(config, field) not in (None, neutral):
                raise NotImplementedError(
                    f"generate({field}={getattr(config, field)!r}) is not implemented by warpload's built-in models; "
                    "load with backend='transformers' for the full transformers generate()")
        device = input_ids.device
        eos = _token_list(config.eos_token_id)
        pad = config.pad_token_id
        if pad is None and eos:
            logger.warning("Setting `pad_token_id` to `eos_token_id`:%d for open-end generation.", eos[0])
            pad = eos[0]
        if attention_mask is None:
            attention_mask = _inferred_mask(input_ids, pad, eos)
        return self._decode(input_ids, attention_mask.to(device), self._new_token_count(config, input_ids.shape[1]),
                            config, eos, pad, generator)

    def _new_token_count(self, config: GenerationConfig, prompt_length: int) -> int:
        """max_new_tokens, else max_length minus the prompt, else transformers 5's default: 20 new
        tokens, the total capped at max_position_embeddings."""
        if config.max_new_tokens is not None:
            return config.max_new_tokens
        if config.max_length is not None:
            return max(config.max_length - prompt_length, 0)
        total = prompt_length + DEFAULT_NEW_TOKENS
        max_positions = getattr(self.config, "max_position_embeddings", None)
        return max((total if max_positions is None else min(total, max_positions)) - prompt_length, 0)

    def _decode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, new_tokens: int,
                config: GenerationConfig, eos: list[int], pad: Optional[int],
                generator: Optional[torch.Generator]) -> torch.Tensor:
        # Positions count real tokens only, so left padding does not shift a row (transformers' rule).
        position_ids = (attention_mask.long().cumsum(-1) - 1).masked_fill(attention_mask == 0, 0)
        cache = KVCache() if config.use_cache else None
        eos_tensor = torch.tensor(eos, device=input_ids.device, dtype=input_ids.dtype)
        unfinished = torch.ones(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        tokens, step_ids, step_positions = input_ids, input_ids, position_ids
        for _ in range(new_tokens):
            output = self(step_ids, attention_mask=attention_mask, position_ids=step_positions,
                          past_key_values=cache, use_cache=config.use_cache, logits_to_keep=1)
            scores = output.logits[:, -1, :].to(dtype=torch.float32, copy=True)
            if config.do_sample:
                probabilities = torch.softmax(_warp(scores, config), dim=-1)
                next_tokens = torch.multinomial(probabilities, num_samples=1, generator=generator).squeeze(1)
            else:
                next_tokens = torch.argmax(scores, dim=-1)
            if pad is not None:
                next_tokens = torch.where(unfinished, next_tokens, torch.full_like(next_tokens, pad))
            tokens = torch.cat([tokens, next_tokens[:, None]], dim=-1)
            attention_mask = torch.cat([attention_mask, attention_mask.new_ones((attention_mask.shape[0], 1))], dim=-1)
            position_ids = torch.cat([position_ids, position_ids[:, -1:] + 1], dim=-1)
            if eos:
                unfinished &= ~torch.isin(next_tokens, eos_tensor)
                if not unfinished.any():
                    break
            if cache is not None:
                step_ids, step_positions = next_tokens[:, None], position_ids[:, -1:]
            else:
                step_ids, step_positions = tokens, position_ids
        return tokens


def _token_list(token_ids: Union[None, int, Sequence[int]]) -> list[int]:
    if token_ids is None:
        return []
    return [int(token_ids)] if isinstance(token_ids, int) else [int(t) for t in token_ids]


def _inferred_mask(input_ids: torch.Tensor, pad: Optional[int], eos: list[int]) -> torch.Tensor:
    """All ones, unless the prompts hold pad tokens that cannot be end-of-sequence tokens."""
    if pad is not None and pad not in eos and bool((input_ids == pad).any()):
        return input_ids.ne(pad).long()
    return torch.ones_like(input_ids, dtype=torch.long)


def _warp(scores: torch.Tensor, config: GenerationConfig) -> torch.Tensor:
    """Temperature, then top-k, then top-p filtering: transformers' sampling warpers in its order."""
    if config.temperature is not None and config.temperature != 1.0:
        if config.temperature <= 0:
            raise ValueError(f"temperature={config.temperature} must be positive when sampling; "
                             "use do_sample=False for greedy decoding")
        scores = scores / config.temperature
    if config.top_k:
        k = min(config.top_k, scores.shape[-1])
        kth_best = torch.topk(scores, k)[0][..., -1, None]
        scores = scores.masked_fill(scores < kth_best, -float("inf"))
    if config.top_p is not None and config.top_p < 1.0:
        sorted_scores, sorted_indices = torch.sort(scores, descending=False)
        cumulative = sorted_scores.softmax(dim=-1).cumsum(dim=-1)
        remove_sorted = cumulative <= (1 - config.top_p)
        remove_sorted[..., -1:] = False  # always keep the most likely token
        remove = remove_sorted.scatter(1, sorted_indices, remove_sorted)
        scores = scores.masked_fill(remove, -float("inf"))
    return scores
