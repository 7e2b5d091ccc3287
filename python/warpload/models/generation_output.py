"""What generate returns with return_dict_in_generate=True: transformers' output records, by field or by key."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Optional, Union

import torch

from .attention import KVCache


class GenerateOutput:
    """Fields by attribute, `output["name"]`, or position among the fields that are set (transformers' ModelOutput)."""

    def keys(self) -> list[str]:
        return [field.name for field in dataclasses.fields(self) if getattr(self, field.name) is not None]

    def to_tuple(self) -> tuple[Any, ...]:
        return tuple(getattr(self, key) for key in self.keys())

    def __getitem__(self, key: Union[str, int]) -> Any:
        return getattr(self, key) if isinstance(key, str) else self.to_tuple()[key]

    def __contains__(self, key: object) -> bool:
        return key in self.keys()


@dataclass
class GenerateDecoderOnlyOutput(GenerateOutput):
    """Greedy or sampled generation: sequences, and per step the processed scores and the raw logits."""

    sequences: torch.Tensor
    scores: Optional[tuple[torch.Tensor, ...]] = None
    logits: Optional[tuple[torch.Tensor, ...]] = None
    attentions: Optional[tuple[Any, ...]] = None
    hidden_states: Optional[tuple[Any, ...]] = None
    cache: Optional[KVCache] = None


@dataclass
class GenerateBeamDecoderOnlyOutput(GenerateOutput):
    """Beam search: the best hypotheses, their length-penalised scores, per-step scores and the beams they came from."""

    sequences: torch.Tensor
    sequences_scores: Optional[torch.Tensor] = None
    scores: Optional[tuple[torch.Tensor, ...]] = None
    logits: Optional[tuple[torch.Tensor, ...]] = None
    beam_indices: Optional[torch.Tensor] = None
    attentions: Optional[tuple[Any, ...]] = None
    hidden_states: Optional[tuple[Any, ...]] = None
    cache: Optional[KVCache] = None
