"""Logits processors of generate: transformers' LogitsProcessor math and order, each one vectorised over rows.

Every processor is a callable `(input_ids, scores) -> scores` over (rows, seq) ids and (rows, vocab)
float32 scores, so transformers' own LogitsProcessor objects passed by a user slot in beside them.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Optional, Sequence

import torch

from ..errors import GenerationOptionError

LogitsProcessor = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class RepetitionPenalty:
    """Divides positive (multiplies negative) scores of tokens already in the row, left padding excluded."""

    def __init__(self, penalty: float, padding_lengths: Optional[torch.Tensor]) -> None:
        if not isinstance(penalty, float) or penalty <= 0:
            raise GenerationOptionError(f"repetition_penalty={penalty!r} must be a strictly positive float")
        self.penalty = penalty
        self.padding_lengths = padding_lengths

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        vocab_size = scores.shape[-1]
        if self.padding_lengths is not None:
            positions = torch.arange(input_ids.shape[1], device=input_ids.device)
            input_ids = input_ids.masked_fill(positions[None, :] < self.padding_lengths[:, None], vocab_size)
        # One spare column takes the masked positions, then is dropped (transformers' trick).
        input_ids = input_ids.clamp(max=vocab_size)
        padded = torch.nn.functional.pad(scores, (0, 1))
        score = torch.gather(padded, 1, input_ids)
        score = torch.where(score < 0, score * self.penalty, score / self.penalty)
        return padded.scatter(1, input_ids, score)[..., :vocab_size]


class NoRepeatNGram:
    """Bans each token that would repeat an n-gram already in the row (prompt and padding included)."""

    def __init__(self, ngram_size: int) -> None:
        self.ngram_size = ngram_size

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        length = input_ids.shape[-1]
        if length < self.ngram_size:
            return scores
        prefix = input_ids[:, length + 1 - self.ngram_size:]
        windows = input_ids.unfold(dimension=1, size=self.ngram_size, step=1)
        matches = (windows[..., :-1] == prefix.unsqueeze(1)).all(dim=-1)
        vocab_size = scores.shape[-1]
        banned = scores.new_zeros((scores.shape[0], vocab_size + 1), dtype=torch.bool)
        banned.scatter_(1, torch.where(matches, windows[..., -1].clamp(max=vocab_size), vocab_size), True)
        return scores.masked_fill(banned[:, :vocab_size], -float("inf"))


class SequenceBias:
    """Adds a bias to the last token of each sequence whose other tokens end the row (bad_words_ids: -inf)."""

    def __init__(self, sequence_bias: dict[tuple[int, ...], float]) -> None:
        self.sequence_bias = sequence_bias
        self.prepared: Optional[tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]]] = None

    def _prepare(self, scores: torch.Tensor) -> tuple[torch.Tensor, list[tuple[torch.Tensor, ...]]]:
        vocab_size = scores.shape[-1]
        invalid = [token for sequence in self.sequence_bias for token in sequence if token >= vocab_size]
        if invalid:
            raise GenerationOptionError(f"The model vocabulary size is {vocab_size}, but the following tokens were "
                                        f"being biased: {invalid}")
        single = torch.zeros((vocab_size,), dtype=torch.float, device=scores.device)
        groups: dict[int, list[tuple[tuple[int, ...], float]]] = {}
        for sequence, bias in self.sequence_bias.items():
            if len(sequence) == 1:
                single[sequence[0]] = bias
            else:
                groups.setdefault(len(sequence) - 1, []).append((sequence, bias))
        multi = [(torch.tensor([s[:-1] for s, _ in group], device=scores.device),
                  torch.tensor([s[-1] for s, _ in group], device=scores.device),
                  torch.tensor([b for _, b in group], dtype=torch.float, device=scores.device))
                 for group in groups.values()]
        return single, multi

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if self.prepared is None:
            self.prepared = self._prepare(scores)
        single, multi = self.prepared
        bias = torch.zeros_like(scores) + single
        for prefixes, last_tokens, biases in multi:
            if prefixes.shape[1] > input_ids.shape[1]:
                continue
            matching = (input_ids[:, None, -prefixes.shape[1]:] == prefixes).all(dim=-1)
            bias.index_add_(1, last_tokens, torch.where(matching, biases, 0.0).to(bias.dtype))
        return scores + bias


def bad_words_bias(bad_words_ids: list[list[int]], eos: Sequence[int]) -> SequenceBias:
    """bad_words_ids as a -inf SequenceBias; a bad word that is just an eos token is dropped, as transformers does."""
    kept = [word for word in bad_words_ids if all(word != [token] for token in eos)]
    return SequenceBias({tuple(word): float("-inf") for word in kept})


class SuppressEosBelow:
    """Sets eos scores to -inf while the rows are shorter than `min_length` (min_length, min_new_tokens)."""

    def __init__(self, min_length: int, eos: torch.Tensor) -> None:
        self.min_length = min_length
        self.eos = eos

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if input_ids.shape[-1] >= self.min_length:
            return scores
        eos_mask = torch.isin(torch.arange(scores.shape[-1], device=scores.device), self.eos)
        return torch.where(eos_mask, -math.inf, scores)


class Temperature:
    def __init__(self, temperature: float) -> None:
        if not isinstance(temperature, float) or not temperature > 0:
            hint = " If you're looking for greedy decoding strategies, set `do_sample=False`." \
                if temperature == 0 else ""
            raise GenerationOptionError(f"`temperature` (={temperature}) has to be a strictly positive float, "
                                        f"otherwise your next token scores will be invalid.{hint}")
        self.temperature = temperature

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        return scores / self.temperature


class TopK:
    """Keeps the k highest scores (at least min_tokens_to_keep)."""

    def __init__(self, top_k: int, min_tokens_to_keep: int) -> None:
        self.top_k = max(top_k, min_tokens_to_keep)

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        kth_best = torch.topk(scores, min(self.top_k, scores.size(-1)))[0][..., -1, None]
        return scores.masked_fill(scores < kth_best, -float("inf"))


class TopP:
    """Keeps the smallest set of most likely tokens whose probabilities reach top_p."""

    def __init__(self, top_p: float, min_tokens_to_keep: int) -> None:
        if not 0 <= top_p <= 1:
            raise GenerationOptionError(f"top_p={top_p!r} must be a float in [0, 1]")
        self.top_p = float(top_p)
        self.min_tokens_to_keep = min_tokens_to_keep

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        sorted_scores, sorted_indices = torch.sort(scores, descending=False)
        cumulative = sorted_scores.softmax(dim=-1).cumsum(dim=-1)
        remove_sorted = cumulative <= (1 - self.top_p)
        remove_sorted[..., -self.min_tokens_to_keep:] = False
        return scores.masked_fill(remove_sorted.scatter(1, sorted_indices, remove_sorted), -float("inf"))


class MinP:
    """Drops tokens less likely than min_p times the most likely one."""

    def __init__(self, min_p: float, min_tokens_to_keep: int) -> None:
        if not 0 <= min_p <= 1:
            raise GenerationOptionError(f"min_p={min_p!r} must be a float in [0, 1]")
        self.min_p = min_p
        self.min_tokens_to_keep = min_tokens_to_keep

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        probs = torch.softmax(scores, dim=-1)
        remove = probs < self.min_p * probs.amax(dim=-1, keepdim=True)
        keep = torch.topk(probs, min(self.min_tokens_to_keep, probs.shape[-1]), dim=-1).indices
        remove.scatter_(-1, keep, False)
        return scores.masked_fill(remove, -float("inf"))


class TypicalP:
    """Locally typical sampling: keeps the tokens whose surprise is closest to the entropy, up to mass typical_p."""

    def __init__(self, mass: float, min_tokens_to_keep: int) -> None:
        if not 0 < mass < 1:
            raise GenerationOptionError(f"typical_p={mass!r} must be a float in (0, 1)")
        self.mass = float(mass)
        self.min_tokens_to_keep = min_tokens_to_keep

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        normalized = torch.nn.functional.log_softmax(scores, dim=-1)
        entropy = -(normalized * torch.exp(normalized)).nansum(-1, keepdim=True)
        shifted = torch.abs((-normalized) - entropy)
        sorted_shifted, sorted_indices = torch.sort(shifted, descending=False)
        cumulative = scores.gather(-1, sorted_indices).softmax(dim=-1).cumsum(dim=-1)
        last = (cumulative < self.mass).sum(dim=1).clamp_(max=sorted_shifted.shape[-1] - 1)
        remove_sorted = sorted_shifted > sorted_shifted.gather(1, last.view(-1, 1))
        remove_sorted[..., :self.min_tokens_to_keep] = False
        return scores.masked_fill(remove_sorted.scatter(1, sorted_indices, remove_sorted), -float("inf"))


class RenormalizeLogits:
    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        return scores.log_softmax(dim=-1)


class ProcessorChain:
    """Processors applied in order, as transformers' LogitsProcessorList is called."""

    def __init__(self, processors: list[LogitsProcessor]) -> None:
        self.processors = processors

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        for processor in self.processors:
            scores = processor(input_ids, scores)
        return scores


def build_processors(config: Any, prompt_length: int, eos: torch.Tensor, padding_lengths: Optional[torch.Tensor],
                     user_processors: Sequence[LogitsProcessor]) -> ProcessorChain:
    """transformers' _get_logits_processor for the options implemented here, in its order: penalties and
    constraints, then the user's processors, then (when sampling) the warpers, then renormalisation."""
    processors: list[LogitsProcessor] = []
    if config.sequence_bias is not None:
        processors.append(SequenceBias(_sequence_bias_dict(config.sequence_bias)))
    if config.repetition_penalty is not None and config.repetition_penalty != 1.0:
        processors.append(RepetitionPenalty(config.repetition_penalty, padding_lengths))
    if config.no_repeat_ngram_size is not None and config.no_repeat_ngram_size > 0:
        processors.append(NoRepeatNGram(config.no_repeat_ngram_size))
    if config.bad_words_ids is not None:
        processors.append(bad_words_bias(config.bad_words_ids, eos.tolist()))
    if eos.numel() and config.min_length is not None and config.min_length > 0:
        processors.append(SuppressEosBelow(config.min_length, eos))
    if eos.numel() and config.min_new_tokens is not None and config.min_new_tokens > 0:
        processors.append(SuppressEosBelow(prompt_length + config.min_new_tokens, eos))
    processors.extend(user_processors)
    if config.do_sample:
        processors.extend(sampling_warpers(config, eos))
    if config.renormalize_logits is True:
        processors.append(RenormalizeLogits())
    return ProcessorChain(processors)


def sampling_warpers(config: Any, eos: torch.Tensor) -> list[LogitsProcessor]:
    """Temperature, top-k, top-p, min-p and typical-p, in transformers' order; beam sampling keeps at least
    one token more than there are eos tokens."""
    keep = max(eos.numel() + 1, 2) if config.num_beams is not None and config.num_beams > 1 else 1
    warpers: list[LogitsProcessor] = []
    if config.temperature is not None and config.temperature != 1.0:
        warpers.append(Temperature(config.temperature))
    if config.top_k is not None and config.top_k != 0:
        warpers.append(TopK(config.top_k, keep))
    if config.top_p is not None and config.top_p < 1.0:
        warpers.append(TopP(config.top_p, keep))
    if config.min_p is not None:
        warpers.append(MinP(config.min_p, keep))
    if config.typical_p is not None and config.typical_p < 1.0:
        warpers.append(TypicalP(config.typical_p, keep))
    return warpers


def _sequence_bias_dict(sequence_bias: Any) -> dict[tuple[int, ...], float]:
    """sequence_bias as {token tuple: bias}: transformers takes a dict or a list of [tokens, bias] pairs."""
    if isinstance(sequence_bias, dict):
        return {tuple(key): float(value) for key, value in sequence_bias.items()}
    return {tuple(tokens): float(bias) for tokens, bias in sequence_bias}
