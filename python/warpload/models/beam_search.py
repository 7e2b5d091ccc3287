"""Beam search (and beam sampling) for generate: transformers 5's vectorised beam search, step for step.

All beams of all prompts run as one batch of batch * num_beams rows: one forward per step, the
cache reordered by one index_select per layer (KVCache.reorder_cache), and the bookkeeping done on
(batch, beams, ...) tensors, never per beam in Python.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import torch

from .attention import KVCache
from .generation_output import GenerateBeamDecoderOnlyOutput


@dataclass
class BeamState:
    """The running and the finished hypotheses of every prompt, (batch, beams, ...) tensors."""

    running_sequences: torch.Tensor
    running_scores: torch.Tensor
    running_beam_indices: torch.Tensor
    sequences: torch.Tensor
    scores: torch.Tensor
    beam_indices: torch.Tensor
    is_finished: torch.Tensor
    may_improve: torch.Tensor


def gather_beams(tensor: torch.Tensor, beam_indices: torch.Tensor) -> torch.Tensor:
    """tensor[b, beam_indices[b, k], ...] for every b, k."""
    while beam_indices.dim() < tensor.dim():
        beam_indices = beam_indices.unsqueeze(-1)
    return torch.take_along_dim(tensor, beam_indices, dim=1)


def flatten(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.reshape(tensor.shape[0] * tensor.shape[1], *tensor.shape[2:])


def initial_state(input_ids: torch.Tensor, batch: int, num_beams: int, max_length: int,
                  fill_value: int) -> BeamState:
    """Every prompt's first beam live with score 0, the other beams at -1e9 (so step one does not pick the same
    token num_beams times), no finished hypothesis yet."""
    device, prompt_length = input_ids.device, input_ids.shape[1]
    running = torch.full((batch, num_beams, max_length), fill_value, dtype=torch.int64, device=device)
    running[:, :, :prompt_length] = input_ids.reshape(batch, num_beams, prompt_length)
    running_scores = torch.zeros((batch, num_beams), dtype=torch.float, device=device)
    running_scores[:, 1:] = -1e9
    running_beam_indices = torch.full((batch, num_beams, max_length - prompt_length), -1, dtype=torch.int32,
                                      device=device)
    return BeamState(running, running_scores, running_beam_indices, running.clone(),
                     torch.full((batch, num_beams), -1e9, dtype=torch.float, device=device),
                     running_beam_indices.clone(), torch.zeros((batch, num_beams), dtype=torch.bool, device=device),
                     torch.ones((batch, 1), dtype=torch.bool, device=device))


def top_continuations(state: BeamState, log_probs: torch.Tensor, length: int, prompt_length: int, keep: int,
                      num_beams: int, do_sample: bool,
                      generator: Optional[torch.Generator]) -> tuple[torch.Tensor, ...]:
    """The `keep` best (or sampled) continuations over all beams of each prompt: their accumulated log-probs,
    sequences and beam indices."""
    batch = log_probs.shape[0]
    if do_sample:
        indices = torch.multinomial(torch.softmax(log_probs, dim=-1), num_samples=keep, generator=generator)
        top_log_probs = torch.gather(log_probs, 1, indices)
        top_log_probs, order = top_log_probs.sort(dim=-1, descending=True)
        indices = indices.gather(-1, order)
    else:
        top_log_probs, indices = torch.topk(log_probs, k=keep)
    vocab_size = log_probs.shape[-1] // num_beams
    source_beams = indices // vocab_size
    beam_indices = gather_beams(state.running_beam_indices, source_beams)
    sequences = gather_beams(state.running_sequences, source_beams)
    sequences[:, :, length] = indices % vocab_size
    offsets = torch.arange(batch, device=indices.device).view(-1, 1) * num_beams
    beam_indices[:, :, length - prompt_length] = source_beams + offsets
    return top_log_probs, sequences, beam_indices


def advance(state: BeamState, top: tuple[torch.Tensor, ...], done: torch.Tensor, top_beams: torch.Tensor,
            length: int, prompt_length: int, config: Any) -> None:
    """Picks the next running beams among the continuations that did not stop, and merges the ones that did
    (length-penalised) into the finished hypotheses when they beat them."""
    top_log_probs, top_sequences, top_beam_indices = top
    num_beams = state.running_scores.shape[1]
    running_log_probs = top_log_probs + done.to(torch.float32) * -1.0e9
    next_indices = torch.topk(running_log_probs, k=num_beams)[1]
    state.running_sequences = gather_beams(top_sequences, next_indices)
    state.running_scores = gather_beams(running_log_probs, next_indices)
    state.running_beam_indices = gather_beams(top_beam_indices, next_indices)

    just_finished = done & top_beams[None, :]
    finished_scores = top_log_probs / ((length + 1 - prompt_length) ** config.length_penalty)
    full = torch.all(state.is_finished, dim=-1, keepdim=True) & (config.early_stopping is True)
    finished_scores = finished_scores + full.to(torch.float32) * -1.0e9
    finished_scores = finished_scores + (~state.may_improve).to(torch.float32) * -1.0e9
    finished_scores = finished_scores + (~just_finished) * -1.0e9
    merged_scores = torch.cat((state.scores, finished_scores), dim=1)
    best = torch.topk(merged_scores, k=num_beams)[1]
    state.sequences = gather_beams(torch.cat((state.sequences, top_sequences), dim=1), best)
    state.scores = gather_beams(merged_scores, best)
    state.beam_indices = gather_beams(torch.cat((state.beam_indices, top_beam_indices), dim=1), best)
    state.is_finished = gather_beams(torch.cat((state.is_finished, just_finished), dim=1), best)


def update_may_improve(state: BeamState, length: int, prompt_length: int, config: Any) -> None:
    """Whether the best running beam could still beat the worst finished one (transformers' heuristic)."""
    if config.early_stopping == "never" and config.length_penalty > 0.0:
        best_length = config.max_length - prompt_length
    else:
        best_length = length - prompt_length
    best_running = state.running_scores[:, :1] / (best_length ** config.length_penalty)
    worst_finished = torch.where(state.is_finished, torch.min(state.scores, dim=1, keepdim=True)[0], -1.0e9)
    state.may_improve = state.may_improve & torch.any(best_running > worst_finished, dim=-1, keepdim=True)


def beam_search(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor, config: Any, processors: Any,
                criteria: Any, fill_value: int, eos_count: int,
                generator: Optional[torch.Generator]) -> Any:
    """Beam search over `input_ids` (batch * num_beams rows, each prompt repeated); returns the sequences, or a
    GenerateBeamDecoderOnlyOutput with return_dict_in_generate, as transformers' _beam_search does."""
    num_beams, prompt_length = config.num_beams, input_ids.shape[1]
    batch = input_ids.shape[0] // num_beams
    keep = max(2, 1 + eos_count) * num_beams
    top_beams = torch.arange(keep, device=input_ids.device) < num_beams
    want_scores = bool(config.return_dict_in_generate and config.output_scores)
    want_logits = bool(config.return_dict_in_generate and config.output_logits)
    all_scores: Optional[list[torch.Tensor]] = [] if want_scores else None
    raw_logits: list[torch.Tensor] = []
    state = initial_state(input_ids, batch, num_beams, config.max_length, fill_value)
    position_ids = (attention_mask.long().cumsum(-1) - 1).masked_fill(attention_mask == 0, 0)
    cache = KVCache() if config.use_cache else None
    step_ids, step_positions, flat_sequences, length = input_ids, position_ids, input_ids, prompt_length
    while True:
        output = model(step_ids, attention_mask=attention_mask, position_ids=step_positions, past_key_values=cache,
                       use_cache=config.use_cache, logits_to_keep=1)
        logits = output.logits[:, -1, :].to(dtype=torch.float32, copy=True)
        del output
        log_probs = processors(flat_sequences, torch.nn.functional.log_softmax(logits, dim=-1))
        if want_logits:
            raw_logits.append(logits.clone())
        if all_scores is not None:
            all_scores.append(log_probs.clone())
        accumulated = (log_probs.view(batch, num_beams, -1) + state.running_scores[:, :, None]).view(batch, -1)
        top = top_continuations(state, accumulated, length, prompt_length, keep, num_beams, config.do_sample,
                                generator)
        done = criteria(flatten(top[1][:, :, :length + 1]), tuple(all_scores) if all_scores is not None else None)
        done = done.view(batch, keep)
        advance(state, top, done, top_beams, length, prompt_length, config)
        if cache is not None:
            cache.reorder_cache(flatten(state.running_beam_indices[..., length - prompt_length]).long())
        length += 1
        update_may_improve(state, length, prompt_length, config)
        open_beam = not (bool(torch.all(state.is_finished)) and config.early_stopping is True)
        if not (bool(torch.any(state.may_improve)) and open_beam and not bool(torch.all(done))):
            break
        flat_sequences = flatten(state.running_sequences[:, :, :length])
        attention_mask = torch.cat([attention_mask, attention_mask.new_ones((attention_mask.shape[0], 1))], dim=-1)
        position_ids = torch.cat([position_ids, position_ids[:, -1:] + 1], dim=-1)
        if cache is not None:
            step_ids, step_positions = flat_sequences[:, -1:], position_ids[:, -1:]
        else:
            step_ids, step_positions = flat_sequences, position_ids
    return beam_outputs(state, config, prompt_length, all_scores, raw_logits if want_logits else None, cache)


def beam_outputs(state: BeamState, config: Any, prompt_length: int, all_scores: Optional[list[torch.Tensor]],
                 raw_logits: Optional[list[torch.Tensor]], cache: Optional[KVCache]) -> Any:
    """The best num_return_sequences hypotheses of each prompt, cropped to the longest one."""
    count = config.num_return_sequences
    sequences = flatten(state.sequences[:, :count, :])
    scores = flatten(state.scores[:, :count])
    beam_indices = flatten(state.beam_indices[:, :count, :])
    generated = int(((beam_indices + 1).bool()).sum(dim=1).max())
    sequences = sequences[:, :prompt_length + generated]
    beam_indices = beam_indices[:, :generated]
    if not config.return_dict_in_generate:
        return sequences
    return GenerateBeamDecoderOnlyOutput(
        sequences=sequences, sequences_scores=scores if config.output_scores else None,
        scores=tuple(all_scores) if all_scores is not None else None,
        logits=tuple(raw_logits) if raw_logits is not None else None, beam_indices=beam_indices, cache=cache)
