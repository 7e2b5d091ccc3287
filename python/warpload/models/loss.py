"""The causal-LM loss: transformers 5's ForCausalLMLoss (shifted cross-entropy, -100 ignored), op for op."""
from __future__ import annotations

from typing import Optional, Union

import torch
import torch.nn.functional as F

# The keywords forward passes on to the loss (transformers' ForCausalLMLoss arguments besides logits and labels).
LOSS_KWARGS = frozenset({"num_items_in_batch", "ignore_index", "shift_labels"})


def causal_lm_loss(logits: torch.Tensor, labels: Optional[torch.Tensor], vocab_size: int, *,
                   num_items_in_batch: Optional[Union[int, torch.Tensor]] = None, ignore_index: int = -100,
                   shift_labels: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Mean cross-entropy of each position's logits against the next label, in float32.

    Labels equal to `ignore_index` (and the last position, which has no next token) do not count.
    With `num_items_in_batch` (the Trainer's count over gradient-accumulation steps) the summed loss
    is divided by it instead. `shift_labels` gives the already shifted targets (then `labels` is unused).
    """
    logits = logits.float()
    if shift_labels is None:
        labels = F.pad(labels, (0, 1), value=ignore_index)
        shift_labels = labels[..., 1:].contiguous()
    logits = logits.view(-1, vocab_size)
    shift_labels = shift_labels.view(-1).to(logits.device)
    if num_items_in_batch is None:
        return F.cross_entropy(logits, shift_labels, ignore_index=ignore_index, reduction="mean")
    loss = F.cross_entropy(logits, shift_labels, ignore_index=ignore_index, reduction="sum")
    if torch.is_tensor(num_items_in_batch):
        num_items_in_batch = num_items_in_batch.to(loss.device)
    return loss / num_items_in_batch
