"""The model object's transformers API: save_pretrained, parameter counts, embeddings access and resizing,
can_generate, gradient checkpointing; mixed into PreTrainedModel so modeling.py keeps to the model itself."""
from __future__ import annotations

import functools
import logging
import os
from typing import Any, Callable, Optional, Union

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from .attention import KVCache
from .generation import GenerationMixin

logger = logging.getLogger(__name__)


class CheckpointedLayer(nn.Module):
    """A decoder layer whose forward is recomputed in the backward pass once gradient checkpointing is on
    (transformers' GradientCheckpointingLayer). A checkpointed layer runs without its KV cache: the recompute
    would append the same keys twice."""

    gradient_checkpointing = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        forward = cls.forward

        @functools.wraps(forward)
        def forward_with_checkpointing(self: "CheckpointedLayer", *args: Any, **kw: Any) -> Any:
            if not (self.gradient_checkpointing and self.training and torch.is_grad_enabled()):
                return forward(self, *args, **kw)
            if any(isinstance(arg, KVCache) for arg in args):
                warn_cache_dropped(type(self).__name__)
                args = tuple(None if isinstance(arg, KVCache) else arg for arg in args)
            return self.checkpoint_function(functools.partial(forward, self, **kw), *args)

        cls.forward = forward_with_checkpointing

    checkpoint_function: Callable[..., Any] = staticmethod(functools.partial(checkpoint, use_reentrant=False))


@functools.lru_cache(maxsize=None)
def warn_cache_dropped(layer_name: str) -> None:
    """Says once per layer class that a checkpointed layer runs without its cache (transformers' warning_once)."""
    logger.warning("Caching is incompatible with gradient checkpointing in %s: running without the cache.", layer_name)


class ModelApiMixin:
    """What transformers' PreTrainedModel offers beyond forward and generate, with the same names and results."""

    config: Any
    base_model_prefix: str

    def save_pretrained(self, save_directory: Union[str, "os.PathLike[str]"], *, is_main_process: bool = True,
                        state_dict: Optional[dict[str, torch.Tensor]] = None, push_to_hub: bool = False,
                        max_shard_size: Union[int, str] = "50GB", safe_serialization: bool = True,
                        variant: Optional[str] = None, **kwargs: Any) -> None:
        """Writes config.json, generation_config.json and the weights as transformers does (see
        warpload.loading.saving.save_pretrained for the options and what it raises)."""
        # The one import from models/ up into loading/ (see pyproject's import contracts): saving needs the writers.
        from ..loading.entry import model_save_pretrained

        model_save_pretrained(self, save_directory, is_main_process=is_main_process, state_dict=state_dict,
                              push_to_hub=push_to_hub, max_shard_size=max_shard_size,
                              safe_serialization=safe_serialization, variant=variant, **kwargs)

    @classmethod
    def can_generate(cls) -> bool:
        """Whether the class has generate() (the causal-LM head models do, base models do not)."""
        return issubclass(cls, GenerationMixin)

    def num_parameters(self, only_trainable: bool = False, exclude_embeddings: bool = False) -> int:
        """The number of parameters (tied ones once), optionally only those requiring grad, or without the
        nn.Embedding weights, as transformers counts them."""
        embeddings = {f"{name}.weight" for name, module in self.named_modules() if isinstance(module, nn.Embedding)}
        return sum(parameter.numel() for name, parameter in self.named_parameters()
                   if not (exclude_embeddings and name in embeddings)
                   and (parameter.requires_grad or not only_trainable))

    def get_memory_footprint(self, return_buffers: bool = True) -> int:
        """Bytes held by the parameters (and buffers, unless return_buffers=False)."""
        tensors = list(self.parameters()) + (list(self.buffers()) if return_buffers else [])
        return sum(tensor.nelement() * tensor.element_size() for tensor in tensors)

    def get_input_embeddings(self) -> nn.Module:
        """The token embeddings: the base model's `input_embeddings_name` attribute."""
        name = getattr(self, "input_embeddings_name", None)
        if name is not None:
            return getattr(self, name)
        return getattr(self, self.base_model_prefix).get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        """Replaces the token embeddings module."""
        name = getattr(self, "input_embeddings_name", None)
        if name is not None:
            setattr(self, name, value)
        else:
            getattr(self, self.base_model_prefix).set_input_embeddings(value)

    def get_output_embeddings(self) -> Optional[nn.Module]:
        """The lm_head of a causal LM; None for a base model, as in transformers."""
        return getattr(self, "lm_head", None)

    def set_output_embeddings(self, value: nn.Module) -> None:
        """Replaces the lm_head."""
        self.lm_head = value

    def resize_token_embeddings(self, new_num_tokens: Optional[int] = None, pad_to_multiple_of: Optional[int] = None,
                                mean_resizing: bool = True) -> nn.Embedding:
        """Resizes the token embeddings (and an untied lm_head) to `new_num_tokens`, rounded up to a multiple of
        `pad_to_multiple_of`; kept rows are copied, added rows are drawn around the old rows' mean and covariance
        (mean_resizing, transformers' default) or initialised as `init_parameter` does. Updates config.vocab_size
        and re-ties the weights. Returns the input embeddings; raises ValueError for a non-int pad_to_multiple_of."""
        embeddings = self.get_input_embeddings()
        if new_num_tokens is None and pad_to_multiple_of is None:
            return embeddings
        if pad_to_multiple_of is not None:
            if not isinstance(pad_to_multiple_of, int) or pad_to_multiple_of <= 0:
                raise ValueError(f"pad_to_multiple_of={pad_to_multiple_of!r}: pass a positive int")
            wanted = embeddings.weight.shape[0] if new_num_tokens is None else new_num_tokens
            new_num_tokens = -(-wanted // pad_to_multiple_of) * pad_to_multiple_of
        requires_grad = embeddings.weight.requires_grad
        resize_embedding(embeddings, new_num_tokens, mean_resizing, self.init_added_rows)
        embeddings.weight.requires_grad_(requires_grad)
        head = self.get_output_embeddings()
        if head is not None and head.weight.shape[0] != new_num_tokens:
            self.set_output_embeddings(resized_linear(head, new_num_tokens, mean_resizing, self.init_added_rows))
        self.config.get_text_config().vocab_size = new_num_tokens
        self.tie_weights()
        return self.get_input_embeddings()

    def init_added_rows(self, module: nn.Module) -> None:
        """Initialises a fresh embedding or linear layer as transformers' _init_weights (mean_resizing=False)."""
        std = getattr(self.config, "initializer_range", 0.02)
        with torch.no_grad():
            module.weight.normal_(mean=0.0, std=std)
            if getattr(module, "bias", None) is not None:
                module.bias.zero_()
            if getattr(module, "padding_idx", None) is not None:
                module.weight[module.padding_idx].zero_()

    def gradient_checkpointing_enable(self, gradient_checkpointing_kwargs: Optional[dict[str, Any]] = None,
                                      every_n_layers: int = 1) -> None:
        """Recomputes every `every_n_layers`-th decoder layer in the backward pass (torch.utils.checkpoint with
        `gradient_checkpointing_kwargs`, default use_reentrant=False as transformers 5) while training."""
        kwargs = {"use_reentrant": False} if gradient_checkpointing_kwargs is None else gradient_checkpointing_kwargs
        function = functools.partial(checkpoint, **kwargs)
        layers = [module for module in self.modules() if isinstance(module, CheckpointedLayer)]
        for index, layer in enumerate(layers):
            layer.gradient_checkpointing = index % every_n_layers == 0
            layer.checkpoint_function = function

    activation_checkpointing_enable = gradient_checkpointing_enable

    def gradient_checkpointing_disable(self) -> None:
        """Turns gradient checkpointing off again."""
        for module in self.modules():
            if isinstance(module, CheckpointedLayer):
                module.gradient_checkpointing = False

    activation_checkpointing_disable = gradient_checkpointing_disable

    @property
    def is_gradient_checkpointing(self) -> bool:
        """Whether any layer is checkpointed."""
        return any(isinstance(module, CheckpointedLayer) and module.gradient_checkpointing
                   for module in self.modules())

    @property
    def supports_gradient_checkpointing(self) -> bool:
        return any(isinstance(module, CheckpointedLayer) for module in self.modules())


def resize_embedding(embeddings: nn.Embedding, new_num_tokens: int, mean_resizing: bool,
                     init: Callable[[nn.Module], None]) -> None:
    """Gives `embeddings` a weight of `new_num_tokens` rows in place (so tied heads follow), as transformers'
    _get_resized_embeddings: old rows kept, added rows from `added_rows`."""
    old_num_tokens, dim = embeddings.weight.shape
    if old_num_tokens == new_num_tokens:
        embeddings.num_embeddings = new_num_tokens
        return
    weight = embeddings.weight
    fresh = nn.Embedding(new_num_tokens, dim, device=weight.device, dtype=weight.dtype)
    added_rows(weight, fresh, old_num_tokens, new_num_tokens, mean_resizing, init)
    kept = min(old_num_tokens, new_num_tokens)
    fresh.weight.data[:kept] = weight.data[:kept]
    embeddings.weight.data = fresh.weight.data
    embeddings.num_embeddings = new_num_tokens
    if embeddings.padding_idx is not None and new_num_tokens - 1 < embeddings.padding_idx:
        embeddings.padding_idx = None


def resized_linear(head: nn.Linear, new_num_tokens: int, mean_resizing: bool,
                   init: Callable[[nn.Module], None]) -> nn.Linear:
    """A new lm_head of `new_num_tokens` outputs with the old rows (and bias) copied, as transformers'
    _get_resized_lm_head; the added bias entries take the old bias's mean."""
    old_num_tokens, dim = head.weight.shape
    fresh = nn.Linear(dim, new_num_tokens, bias=head.bias is not None, device=head.weight.device,
                      dtype=head.weight.dtype)
    added_rows(head.weight, fresh, old_num_tokens, new_num_tokens, mean_resizing, init)
    kept = min(old_num_tokens, new_num_tokens)
    with torch.no_grad():
        if head.bias is not None and mean_resizing and new_num_tokens > old_num_tokens:
            bias = head.bias.data
            fresh.bias.data[old_num_tokens:].normal_(mean=bias.float().mean().item(),
                                                     std=1e-9 * bias.std().float().item())
        fresh.weight.data[:kept] = head.weight.data[:kept]
        if head.bias is not None:
            fresh.bias.data[:kept] = head.bias.data[:kept]
    fresh.weight.requires_grad_(head.weight.requires_grad)
    return fresh


def added_rows(old_weight: torch.Tensor, fresh: nn.Module, old_num_tokens: int, new_num_tokens: int,
               mean_resizing: bool, init: Callable[[nn.Module], None]) -> None:
    """Fills the rows of `fresh` beyond the old ones: from a normal around the old rows' mean with 1e-9 times their
    covariance (transformers' _init_added_embeddings_weights_with_mean; the mean itself when that covariance is not
    positive definite), or with `init`."""
    if new_num_tokens <= old_num_tokens:
        return
    if not mean_resizing:
        init(fresh)
        return
    added = new_num_tokens - old_num_tokens
    old = old_weight.data.to(torch.float32)
    mean = old.mean(dim=0)
    centered = old - mean
    covariance = 1e-9 * (centered.T @ centered / old_num_tokens)
    if torch.distributions.constraints.positive_definite.check(covariance).all():
        distribution = torch.distributions.multivariate_normal.MultivariateNormal(mean, covariance_matrix=covariance)
        rows = distribution.sample(sample_shape=(added,))
    else:
        rows = mean[None, :].repeat(added, 1)
    fresh.weight.data[-added:] = rows.to(old_weight.dtype)
