"""The base of the built-in models: outputs, from_pretrained, weight tying, init of weights a checkpoint lacks."""
from __future__ import annotations

import functools
import math
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Iterable, Optional, Union

import torch
from torch import nn

from .attention import KVCache, layer_masks
from .config import PretrainedConfig
from .forward_options import ForwardRecord, cache_argument
from .generation import GenerationMixin
from .generation_config import GenerationConfig
from .lora import AdapterMixin
from .loss import LOSS_KWARGS, causal_lm_loss
from .model_api import ModelApiMixin
from .outputs import BaseModelOutputWithPast, CausalLMOutputWithPast, ModelOutput

if TYPE_CHECKING:
    import os


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
    """A base model (GPT2Model, LlamaModel): token embeddings named `input_embeddings_name`, then the layers
    (the ModuleList named `layers_name`) over a cache, then the norm named `final_norm_name`. Subclasses say
    how positions enter (`embed`, `layer_inputs`) and which layers use a sliding window.

    Each layer is called as layer(hidden_states, layer_inputs, mask, cache, eager) and returns
    (hidden_states, attention weights or None).
    """

    config: PretrainedConfig
    input_embeddings_name: ClassVar[str]
    layers_name: ClassVar[str]
    final_norm_name: ClassVar[str]
    output_class: ClassVar[type[ModelOutput]] = BaseModelOutputWithPast

    def forward(self, input_ids: Optional[torch.Tensor] = None, attention_mask: Optional[torch.Tensor] = None,
                position_ids: Optional[torch.Tensor] = None, cache: Any = None,
                inputs_embeds: Optional[torch.Tensor] = None, use_cache: Optional[bool] = None,
                output_attentions: Optional[bool] = None, output_hidden_states: Optional[bool] = None,
                return_dict: Optional[bool] = None, *, past_key_values: Any = None,
                cache_position: Optional[torch.Tensor] = None) -> Union[ModelOutput, tuple[Any, ...]]:
        """The hidden states after the final norm, as transformers' base models return them.

        Exactly one of `input_ids` (batch, seq) and `inputs_embeds` (batch, seq, hidden). `cache`
        (or `past_key_values`): a KVCache this model returned, or a transformers Cache such as
        DynamicCache, extended in place; with use_cache (config.use_cache by default) and none given,
        a new KVCache. `cache_position` is accepted and unused, as in transformers 5 (positions come
        from `position_ids`, else the cached length + 0, 1, ...). Raises ValueError for both or
        neither of input_ids and inputs_embeds.
        """
        record = ForwardRecord.of(self.config, output_attentions, output_hidden_states, return_dict)
        hidden_states, cache = self.decode(input_ids, attention_mask, position_ids,
                                           cache_argument(cache, past_key_values), inputs_embeds, use_cache, record)
        output = self.output_class(last_hidden_state=hidden_states, cache=cache, **self.recorded_outputs(record))
        return output if record.return_dict else output.to_tuple()

    def decode(self, input_ids: Optional[torch.Tensor], attention_mask: Optional[torch.Tensor],
               position_ids: Optional[torch.Tensor], cache: Any, inputs_embeds: Optional[torch.Tensor],
               use_cache: Optional[bool], record: ForwardRecord) -> tuple[torch.Tensor, Any]:
        """(the last hidden states, the cache) of a forward call, filling `record` on the way."""
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("You must specify exactly one of input_ids or inputs_embeds")
        if inputs_embeds is None:
            inputs_embeds = self.get_input_embeddings()(input_ids)
        use_cache = self.config.use_cache if use_cache is None else use_cache
        if use_cache and cache is None:
            cache = KVCache()
        past_length = cache.get_seq_length() if cache is not None else 0
        if position_ids is None:
            position_ids = torch.arange(past_length, past_length + inputs_embeds.shape[1],
                                        device=inputs_embeds.device)[None]
        hidden_states = self.embed(inputs_embeds, position_ids)
        masks = layer_masks(attention_mask, hidden_states, past_length, cache, self.sliding_windows(), record.eager)
        layer_inputs = self.layer_inputs(hidden_states, position_ids)
        for layer, mask in zip(getattr(self, self.layers_name), masks):
            if record.hidden_states is not None:
                record.hidden_states.append(hidden_states)
            hidden_states, weights = layer(hidden_states, layer_inputs, mask, cache, record.eager)
            if record.attentions is not None:
                record.attentions.append(weights)
        hidden_states = getattr(self, self.final_norm_name)(hidden_states)
        if record.hidden_states is not None:
            record.hidden_states.append(hidden_states)
        return hidden_states, cache

    def recorded_outputs(self, record: ForwardRecord) -> dict[str, Any]:
        """The output fields `record` fills: hidden_states, attentions (and GPT-2's cross_attentions)."""
        return {"hidden_states": record.hidden_states_tuple(), "attentions": record.attentions_tuple()}

    def embed(self, inputs_embeds: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
        """The first layer's input from the token embeddings (GPT-2 adds learned positions)."""
        return inputs_embeds

    def layer_inputs(self, hidden_states: torch.Tensor, position_ids: torch.Tensor) -> Any:
        """What every layer gets besides hidden states, mask and cache (the Llama family: rotary cos/sin)."""
        return None

    def sliding_windows(self) -> list[Optional[int]]:
        """Each layer's sliding window (None: it sees every earlier token)."""
        return [None] * len(getattr(self, self.layers_name))



class PreTrainedCausalLM(PreTrainedModel, GenerationMixin):
    """A base model (the attribute named base_model_prefix) under an `lm_head`; generates.

    Its generation_config comes from generation_config.json, else from the model config.
    """

    lm_head: nn.Linear
    output_class: ClassVar[type[ModelOutput]] = CausalLMOutputWithPast

    def __init__(self, config: PretrainedConfig) -> None:
        super().__init__(config)
        self.generation_config = GenerationConfig.from_model_config(config)

    def forward(self, input_ids: Optional[torch.Tensor] = None, attention_mask: Optional[torch.Tensor] = None,
                position_ids: Optional[torch.Tensor] = None, cache: Any = None,
                inputs_embeds: Optional[torch.Tensor] = None, labels: Optional[torch.Tensor] = None,
                use_cache: Optional[bool] = None, logits_to_keep: Union[int, torch.Tensor] = 0, *,
                past_key_values: Any = None, output_attentions: Optional[bool] = None,
                output_hidden_states: Optional[bool] = None, return_dict: Optional[bool] = None,
                cache_position: Optional[torch.Tensor] = None, **loss_kwargs: Any) -> Union[ModelOutput, tuple]:
        """Next-token logits (batch, seq, vocab), as transformers' causal LMs return them.

        Inputs, cache and options as the base model's forward. `attention_mask` (batch, past + seq)
        marks real tokens; positions default to the cached length + 0, 1, ... (pass position_ids for
        left-padded rows, as generate does). `logits_to_keep`: an int keeps the last that many
        positions (0: all), a tensor the positions it indexes. `labels` (batch, seq) adds `loss`, the
        shifted cross-entropy of transformers' ForCausalLMLoss (-100 ignored), which also takes
        `num_items_in_batch`, `ignore_index` and `shift_labels`. Returns a CausalLMOutputWithPast (a
        tuple of its fields that are not None with return_dict=False). Raises TypeError for other
        keywords.
        """
        unknown = set(loss_kwargs) - LOSS_KWARGS
        if unknown:
            raise TypeError(f"{type(self).__name__}.forward() got unexpected keyword argument(s) {sorted(unknown)}")
        base = getattr(self, self.base_model_prefix)
        record = ForwardRecord.of(self.config, output_attentions, output_hidden_states, return_dict)
        hidden_states, cache = base.decode(input_ids, attention_mask, position_ids,
                                           cache_argument(cache, past_key_values), inputs_embeds, use_cache, record)
        if isinstance(logits_to_keep, int):
            if logits_to_keep:
                hidden_states = hidden_states[:, -logits_to_keep:, :]
        else:
            hidden_states = hidden_states[:, logits_to_keep, :]
        logits = self.lm_head(hidden_states)
        loss = None
        if labels is not None:
            loss = causal_lm_loss(logits, labels, self.config.vocab_size, **loss_kwargs)
        output = self.output_class(loss=loss, logits=logits, cache=cache, **base.recorded_outputs(record))
        return output if record.return_dict else output.to_tuple()
