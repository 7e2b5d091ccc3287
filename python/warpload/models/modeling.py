"""The base of the built-in models: outputs, from_pretrained, weight tying, init of weights a checkpoint lacks."""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Iterable, Optional

import torch
from torch import nn

from .attention import KVCache
from .config import PretrainedConfig
from .generation import GenerationMixin
from .generation_config import GenerationConfig
from .lora import AdapterMixin
from .model_api import ModelApiMixin

if TYPE_CHECKING:
    import os


@dataclass
class BaseModelOutput:
    """What a base model (GPT2Model, LlamaModel) returns."""

    last_hidden_state: torch.Tensor
    past_key_values: Optional[KVCache] = None


@dataclass
class CausalLMOutput:
    """What a causal-LM head model returns: next-token logits and the cache to continue from."""

    logits: torch.Tensor
    past_key_values: Optional[KVCache] = None


class NewGELU(nn.Module):
    """transformers' NewGELUActivation (GPT-2's gelu_new), written out so results match it bit for bit."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))


# config.activation_function / hidden_act names (transformers' ACT2FN) the built-in models implement.
ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "gelu_new": NewGELU,
    "gelu": nn.GELU,
    "gelu_pytorch_tanh": functools.partial(nn.GELU, approximate="tanh"),
    "relu": nn.ReLU,
    "silu": nn.SiLU,
    "swish": nn.SiLU,
}


class Conv1D(nn.Module):
    """GPT-2's transposed linear layer: weight (in, out), y = x @ weight + bias (transformers' Conv1D)."""

    def __init__(self, nf: int, nx: int) -> None:
        super().__init__()
        self.nf = nf
        self.nx = nx
        self.weight = nn.Parameter(torch.empty(nx, nf))
        self.bias = nn.Parameter(torch.zeros(nf))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.addmm(self.bias, x.view(-1, x.size(-1)), self.weight)
        return out.view(x.size()[:-1] + (self.nf,))


def embedding(num_embeddings: int, embedding_dim: int, padding_idx: Optional[int] = None) -> nn.Embedding:
    """An nn.Embedding whose weight is left uninitialised (it is loaded, or init_parameter fills it).

    Models are built on the meta device, where nn.Embedding's own normal_ init goes through
    torch._refs and imports torch._dynamo: 0.75 s on the first load of a process.
    """
    return nn.Embedding(num_embeddings, embedding_dim, padding_idx, _weight=torch.empty(num_embeddings, embedding_dim))


class PreTrainedModel(ModelApiMixin, AdapterMixin, nn.Module):
    """A built-in model: transformers' module tree and state-dict names, loadable by warpload.from_pretrained;
    transformers' model methods (save_pretrained, num_parameters, resize_token_embeddings...) from ModelApiMixin,
    its adapter methods (load_adapter, set_adapter...) from AdapterMixin.

    Subclasses set `config_class`, `base_model_prefix` (the base model's attribute in head models),
    `tied_weights_keys` ({target: source}, applied when config.tie_word_embeddings) and the
    regexes transformers ignores among unexpected checkpoint keys.
    """

    config_class: ClassVar[type[PretrainedConfig]] = PretrainedConfig
    base_model_prefix: ClassVar[str] = ""
    tied_weights_keys: ClassVar[dict[str, str]] = {}
    keys_to_ignore_on_load_unexpected: ClassVar[tuple[str, ...]] = ()
    # Modules device_map="auto" never splits across devices, as transformers' class declares (_no_split_modules).
    no_split_modules: ClassVar[tuple[str, ...]] = ()

    def __init__(self, config: PretrainedConfig) -> None:
        super().__init__()
        self.config = config
        if getattr(config, "_attn_implementation", None) is None:  # recorded as transformers records its choice
            config._attn_implementation = "sdpa"

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: "Optional[str | os.PathLike[str]]", *model_args: Any,
                        **kwargs: Any) -> Any:
        """Loads this class from a checkpoint folder; options as warpload.AutoModelForCausalLM.from_pretrained."""
        # The one import from models/ up into loading/ (see pyproject's import contracts).
        from ..loading.entry import model_from_pretrained

        return model_from_pretrained(cls, pretrained_model_name_or_path, *model_args, **kwargs)

    @classmethod
    def unsupported_features(cls, config: PretrainedConfig) -> list[str]:
        """Config settings this implementation does not reproduce (then transformers' class is needed)."""
        return []

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    def tied_weights(self) -> dict[str, str]:
        """{target: source} parameter names to share, empty unless config.tie_word_embeddings."""
        return dict(self.tied_weights_keys) if getattr(self.config, "tie_word_embeddings", False) else {}

    def tie_weights(self) -> None:
        """Makes each tied target the very Parameter of its source (shared storage), as transformers ties."""
        self.tie(self.tied_weights().items())

    def tie(self, pairs: Iterable[tuple[str, str]]) -> None:
        """Shares the source Parameter into each (target, source) pair's target."""
        for target, source in pairs:
            parent_name, _, leaf = target.rpartition(".")
            setattr(self.get_submodule(parent_name), leaf, self.get_parameter(source))

    def ignored_unexpected_patterns(self) -> list[str]:
        """Regexes of checkpoint keys not reported as unexpected: the class's list, plus (transformers 5)
        rotary frequencies and position ids that older checkpoints saved as buffers."""
        patterns = list(self.keys_to_ignore_on_load_unexpected)
        buffers = [name for name, _ in self.named_buffers()]
        if any(name.endswith("rotary_emb.inv_freq") for name in buffers):
            patterns.append(r"rotary_emb\.inv_freq")
        if any(name.endswith("position_ids") for name in buffers):
            patterns.append(r"(^|\.)position_ids$")
        return patterns

    def init_parameter(self, name: str) -> None:
        """Initialises one parameter in place as transformers' `_init_weights` does for its module type."""
        parent_name, _, leaf = name.rpartition(".")
        module = self.get_submodule(parent_name)
        tensor = getattr(module, leaf)
        std = getattr(self.config, "initializer_range", 0.02)
        with torch.no_grad():
            if leaf == "bias":
                tensor.zero_()
            elif "Norm" in type(module).__name__:
                tensor.fill_(1.0)
            else:
                tensor.normal_(mean=0.0, std=std)
                if isinstance(module, nn.Embedding) and module.padding_idx is not None:
                    tensor[module.padding_idx].zero_()

    def reset_buffers(self, device: Any) -> None:
        """Computes the buffers checkpoints do not hold (rotary frequencies) on `device`."""
        for module in self.modules():
            if not isinstance(module, PreTrainedModel) and hasattr(module, "reset_buffers"):
                module.reset_buffers(device)


class DecoderStack(nn.Module):
    """A base model (GPT2Model, LlamaModel): token embeddings named `input_embeddings_name`, then
    layers over a cache; subclasses implement `hidden_states`."""

    config: PretrainedConfig
    input_embeddings_name: ClassVar[str]

    def forward(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor] = None,
                position_ids: Optional[torch.Tensor] = None, past_key_values: Optional[KVCache] = None,
                use_cache: Optional[bool] = None) -> BaseModelOutput:
        """Hidden states after the final norm (arguments as PreTrainedCausalLM.forward)."""
        use_cache = self.config.use_cache if use_cache is None else use_cache
        if use_cache and past_key_values is None:
            past_key_values = KVCache()
        past_length = past_key_values.get_seq_length() if past_key_values is not None else 0
        if position_ids is None:
            position_ids = torch.arange(past_length, past_length + input_ids.shape[1], device=input_ids.device)[None]
        cache = past_key_values if use_cache else None
        return BaseModelOutput(self.hidden_states(input_ids, attention_mask, position_ids, past_length, cache), cache)

    def hidden_states(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor],
                      position_ids: torch.Tensor, past_length: int, cache: Optional[KVCache]) -> torch.Tensor:
        """The last hidden states of `input_ids` at `position_ids`, after `past_length` cached tokens."""
        raise NotImplementedError


class PreTrainedCausalLM(PreTrainedModel, GenerationMixin):
    """A base model (the attribute named base_model_prefix) under an `lm_head`; generates.

    Its generation_config comes from generation_config.json, else from the model config.
    """

    lm_head: nn.Linear

    def __init__(self, config: PretrainedConfig) -> None:
        super().__init__(config)
        self.generation_config = GenerationConfig.from_model_config(config)

    def forward(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor] = None,
                position_ids: Optional[torch.Tensor] = None, past_key_values: Optional[KVCache] = None,
                use_cache: Optional[bool] = None, logits_to_keep: int = 0) -> CausalLMOutput:
        """Next-token logits (batch, seq, vocab), or of the last `logits_to_keep` positions only.

        `attention_mask` (batch, past + seq) marks real tokens; positions default to the cached
        length + 0, 1, ... (pass position_ids for left-padded rows, as generate does).
        """
        outputs = getattr(self, self.base_model_prefix)(input_ids, attention_mask=attention_mask,
                                                         position_ids=position_ids, past_key_values=past_key_values,
                                                         use_cache=use_cache)
        hidden_states = outputs.last_hidden_state
        if logits_to_keep:
            hidden_states = hidden_states[:, -logits_to_keep:, :]
        return CausalLMOutput(self.lm_head(hidden_states), outputs.past_key_values)

