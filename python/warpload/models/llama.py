"""The Llama family: Llama, Mistral (sliding window), Qwen2 (q/k/v biases) and Qwen3 (q/k norms) as small deltas."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import torch
from torch import nn

from .attention import attention
from .config import LlamaConfig, MistralConfig, PretrainedConfig, Qwen2Config, Qwen3Config
from .model_api import CheckpointedLayer
from .modeling import ACTIVATIONS, DecoderStack, PreTrainedCausalLM, PreTrainedModel, embedding
from .rope import ROPE_TYPES, RotaryEmbedding, apply_rotary


@dataclass(frozen=True)
class AttentionLayout:
    """What distinguishes one family's attention layers from Llama's.

    A bias of None follows config.attention_bias; `sliding` says which layers use
    config.sliding_window: "none", "all" (Mistral) or those marked "sliding_attention" in
    config.layer_types (Qwen2, Qwen3, where use_sliding_window sets them).
    """

    qkv_bias: Optional[bool] = None
    o_bias: Optional[bool] = None
    qk_norm: bool = False
    sliding: str = "none"

    def bias(self, config: PretrainedConfig, fixed: Optional[bool]) -> bool:
        return config.attention_bias if fixed is None else fixed

    def sliding_window(self, config: PretrainedConfig, layer_idx: int) -> Optional[int]:
        if self.sliding == "all" or (self.sliding == "layer_types"
                                     and config.layer_types[layer_idx] == "sliding_attention"):
            return config.sliding_window
        return None


class RMSNorm(nn.Module):
    """transformers' LlamaRMSNorm: normalise in float32, scale in the input dtype."""

    def __init__(self, hidden_size: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.variance_epsilon = eps

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        input_dtype = hidden_states.dtype
        hidden_states = hidden_states.to(torch.float32)
        variance = hidden_states.pow(2).mean(-1, keepdim=True)
        hidden_states = hidden_states * torch.rsqrt(variance + self.variance_epsilon)
        return self.weight * hidden_states.to(input_dtype)


class LlamaMLP(nn.Module):
    def __init__(self, config: PretrainedConfig) -> None:
        super().__init__()
        bias = getattr(config, "mlp_bias", False)
        self.gate_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=bias)
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=bias)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=bias)
        self.act_fn = ACTIVATIONS[config.hidden_act]()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.act_fn(self.gate_proj(x)) * self.up_proj(x))


class LlamaAttention(nn.Module):
    """Grouped-query attention with rotary positions; `layout` adds the family's biases, norms and window."""

    def __init__(self, config: PretrainedConfig, layer_idx: int, layout: AttentionLayout) -> None:
        super().__init__()
        self.layer_idx = layer_idx
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        self.scaling = self.head_dim ** -0.5
        self.attention_dropout = getattr(config, "attention_dropout", 0.0)
        self.sliding_window = layout.sliding_window(config, layer_idx)
        hidden, heads, kv_heads = config.hidden_size, config.num_attention_heads, config.num_key_value_heads
        qkv_bias = layout.bias(config, layout.qkv_bias)
        self.q_proj = nn.Linear(hidden, heads * self.head_dim, bias=qkv_bias)
        self.k_proj = nn.Linear(hidden, kv_heads * self.head_dim, bias=qkv_bias)
        self.v_proj = nn.Linear(hidden, kv_heads * self.head_dim, bias=qkv_bias)
        self.o_proj = nn.Linear(heads * self.head_dim, hidden, bias=layout.bias(config, layout.o_bias))
        if layout.qk_norm:
            self.q_norm = RMSNorm(self.head_dim, eps=config.rms_norm_eps)
            self.k_norm = RMSNorm(self.head_dim, eps=config.rms_norm_eps)

    def forward(self, hidden_states: torch.Tensor, position_embeddings: tuple[torch.Tensor, torch.Tensor],
                mask: Optional[torch.Tensor], cache: Any, eager: bool) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        shape = (*hidden_states.shape[:-1], -1, self.head_dim)
        query = self.q_proj(hidden_states).view(shape)
        key = self.k_proj(hidden_states).view(shape)
        if hasattr(self, "q_norm"):
            query, key = self.q_norm(query), self.k_norm(key)
        query, key = query.transpose(1, 2), key.transpose(1, 2)
        value = self.v_proj(hidden_states).view(shape).transpose(1, 2)
        query, key = apply_rotary(query, key, *position_embeddings)
        if cache is not None:
            key, value = cache.update(key, value, self.layer_idx)
        output, weights = attention(query, key, value, mask, self.scaling, eager=eager, softmax_in_float32=True,
                                    dropout=self.attention_dropout if self.training else 0.0)
        return self.o_proj(output), weights


class LlamaDecoderLayer(CheckpointedLayer):
    def __init__(self, config: PretrainedConfig, layer_idx: int, layout: AttentionLayout) -> None:
        super().__init__()
        self.self_attn = LlamaAttention(config, layer_idx, layout)
        self.mlp = LlamaMLP(config)
        self.input_layernorm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps)

    def forward(self, hidden_states: torch.Tensor, position_embeddings: tuple[torch.Tensor, torch.Tensor],
                mask: Optional[torch.Tensor], cache: Any, eager: bool) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        attention, weights = self.self_attn(self.input_layernorm(hidden_states), position_embeddings, mask, cache,
                                            eager)
        hidden_states = hidden_states + attention
        return hidden_states + self.mlp(self.post_attention_layernorm(hidden_states)), weights


class LlamaPreTrainedModel(PreTrainedModel):
    config_class = LlamaConfig
    base_model_prefix = "model"
    # transformers names it per family (MistralDecoderLayer, Qwen2DecoderLayer, ...); the built-ins share this one.
    no_split_modules = ("LlamaDecoderLayer",)

    @classmethod
    def unsupported_features(cls, config: PretrainedConfig) -> list[str]:
        problems = []
        if config.hidden_act not in ACTIVATIONS:
            problems.append(f"hidden_act={config.hidden_act!r}")
        rope_type = config.rope_parameters.get("rope_type")
        if rope_type not in ROPE_TYPES:
            problems.append(f"rope_type={rope_type!r}")
        layer_types = set(getattr(config, "layer_types", None) or ())
        if layer_types - {"full_attention", "sliding_attention"}:
            problems.append(f"layer_types={sorted(layer_types)}")
        return problems


class LlamaModel(LlamaPreTrainedModel, DecoderStack):
    input_embeddings_name, layers_name, final_norm_name = "embed_tokens", "layers", "norm"
    attention_layout = AttentionLayout()

    def __init__(self, config: PretrainedConfig) -> None:
        super().__init__(config)
        self.padding_idx = config.pad_token_id
        self.embed_tokens = embedding(config.vocab_size, config.hidden_size, self.padding_idx)
        self.layers = nn.ModuleList([LlamaDecoderLayer(config, i, self.attention_layout)
                                     for i in range(config.num_hidden_layers)])
        self.norm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.rotary_emb = RotaryEmbedding(config)

    def layer_inputs(self, hidden_states: torch.Tensor, position_ids: torch.Tensor) -> Any:
        return self.rotary_emb(hidden_states, position_ids)

    def sliding_windows(self) -> list[Optional[int]]:
        return [layer.self_attn.sliding_window for layer in self.layers]


class LlamaForCausalLM(LlamaPreTrainedModel, PreTrainedCausalLM):
    tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}
    base_model_class: type[LlamaModel] = LlamaModel

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if "config_class" not in cls.__dict__:
            cls.config_class = cls.base_model_class.config_class

    def __init__(self, config: PretrainedConfig) -> None:
        super().__init__(config)
        self.model = self.base_model_class(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)


class MistralModel(LlamaModel):
    config_class = MistralConfig
    attention_layout = AttentionLayout(qkv_bias=False, o_bias=False, sliding="all")


class MistralForCausalLM(LlamaForCausalLM):
    base_model_class = MistralModel


class Qwen2Model(LlamaModel):
    config_class = Qwen2Config
    attention_layout = AttentionLayout(qkv_bias=True, o_bias=False, sliding="layer_types")


class Qwen2ForCausalLM(LlamaForCausalLM):
    base_model_class = Qwen2Model


class Qwen3Model(LlamaModel):
    config_class = Qwen3Config
    attention_layout = AttentionLayout(qk_norm=True, sliding="layer_types")


class Qwen3ForCausalLM(LlamaForCausalLM):
    base_model_class = Qwen3Model
