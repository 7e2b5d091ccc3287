"""GPT-2 (GPT2Model, GPT2LMHeadModel): transformers' module tree and key names, SDPA or eager attention, a KV
cache."""
from __future__ import annotations

from typing import Any, Optional

import torch
from torch import nn

from .attention import attention
from .config import GPT2Config, PretrainedConfig
from .forward_options import ForwardRecord
from .model_api import CheckpointedLayer
from .modeling import ACTIVATIONS, Conv1D, DecoderStack, PreTrainedCausalLM, PreTrainedModel, embedding
from .outputs import BaseModelOutputWithPastAndCrossAttentions, CausalLMOutputWithCrossAttentions


class GPT2Attention(nn.Module):
    def __init__(self, config: GPT2Config, layer_idx: int) -> None:
        super().__init__()
        self.embed_dim = config.hidden_size
        self.num_heads = config.num_attention_heads
        self.head_dim = self.embed_dim // self.num_heads
        self.layer_idx = layer_idx
        self.scaling = self.head_dim ** -0.5 if config.scale_attn_weights else 1.0
        if config.scale_attn_by_inverse_layer_idx:
            self.scaling /= float(layer_idx + 1)
        self.c_attn = Conv1D(3 * self.embed_dim, self.embed_dim)
        self.c_proj = Conv1D(self.embed_dim, self.embed_dim)
        self.attn_dropout = nn.Dropout(config.attn_pdrop)
        self.resid_dropout = nn.Dropout(config.resid_pdrop)

    def forward(self, hidden_states: torch.Tensor, mask: Optional[torch.Tensor], cache: Any,
                eager: bool) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        query, key, value = self.c_attn(hidden_states).split(self.embed_dim, dim=2)
        shape = (*hidden_states.shape[:-1], -1, self.head_dim)
        query, key, value = (t.view(shape).transpose(1, 2) for t in (query, key, value))
        if cache is not None:
            key, value = cache.update(key, value, self.layer_idx)
        output, weights = attention(query, key, value, mask, self.scaling, eager=eager, softmax_in_float32=False,
                                    dropout=self.attn_dropout.p if self.training else 0.0)
        return self.resid_dropout(self.c_proj(output)), weights


class GPT2MLP(nn.Module):
    def __init__(self, intermediate_size: int, config: GPT2Config) -> None:
        super().__init__()
        self.c_fc = Conv1D(intermediate_size, config.hidden_size)
        self.c_proj = Conv1D(config.hidden_size, intermediate_size)
        self.act = ACTIVATIONS[config.activation_function]()
        self.dropout = nn.Dropout(config.resid_pdrop)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(self.act(self.c_fc(hidden_states))))


class GPT2Block(CheckpointedLayer):
    def __init__(self, config: GPT2Config, layer_idx: int) -> None:
        super().__init__()
        hidden_size = config.hidden_size
        self.ln_1 = nn.LayerNorm(hidden_size, eps=config.layer_norm_epsilon)
        self.attn = GPT2Attention(config, layer_idx)
        self.ln_2 = nn.LayerNorm(hidden_size, eps=config.layer_norm_epsilon)
        self.mlp = GPT2MLP(config.n_inner if config.n_inner is not None else 4 * hidden_size, config)

    def forward(self, hidden_states: torch.Tensor, layer_inputs: None, mask: Optional[torch.Tensor], cache: Any,
                eager: bool) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        attention, weights = self.attn(self.ln_1(hidden_states), mask, cache, eager)
        hidden_states = attention + hidden_states
        return hidden_states + self.mlp(self.ln_2(hidden_states)), weights


class GPT2PreTrainedModel(PreTrainedModel):
    config_class = GPT2Config
    base_model_prefix = "transformer"
    no_split_modules = ("GPT2Block",)
    # transformers 5 builds its masks instead of loading the old `attn.bias` buffers.
    keys_to_ignore_on_load_unexpected = ("attn.bias", "crossattention.bias")

    @classmethod
    def unsupported_features(cls, config: PretrainedConfig) -> list[str]:
        problems = []
        if config.add_cross_attention:
            problems.append("add_cross_attention=True")
        if config.activation_function not in ACTIVATIONS:
            problems.append(f"activation_function={config.activation_function!r}")
        if getattr(config, "reorder_and_upcast_attn", False) and getattr(config, "_attn_implementation", "") == "eager":
            problems.append("reorder_and_upcast_attn=True with eager attention")
        return problems

    def init_parameter(self, name: str) -> None:
        """As transformers' GPT-2 init: the residual projections (c_proj) take std / sqrt(2 * n_layer)."""
        super().init_parameter(name)
        if name.endswith("c_proj.weight"):
            with torch.no_grad():
                self.get_parameter(name).normal_(mean=0.0,
                                                 std=self.config.initializer_range / (2 * self.config.n_layer) ** 0.5)


class GPT2Model(GPT2PreTrainedModel, DecoderStack):
    input_embeddings_name, layers_name, final_norm_name = "wte", "h", "ln_f"
    output_class = BaseModelOutputWithPastAndCrossAttentions

    def __init__(self, config: GPT2Config) -> None:
        super().__init__(config)
        self.embed_dim = config.hidden_size
        self.wte = embedding(config.vocab_size, self.embed_dim)
        self.wpe = embedding(config.max_position_embeddings, self.embed_dim)
        self.drop = nn.Dropout(config.embd_pdrop)
        self.h = nn.ModuleList([GPT2Block(config, i) for i in range(config.num_hidden_layers)])
        self.ln_f = nn.LayerNorm(self.embed_dim, eps=config.layer_norm_epsilon)

    def embed(self, inputs_embeds: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
        return self.drop(inputs_embeds + self.wpe(position_ids))

    def recorded_outputs(self, record: ForwardRecord) -> dict[str, Any]:
        # transformers' GPT-2 records cross-attentions whenever attentions are asked for: none without an encoder.
        return {**super().recorded_outputs(record), "cross_attentions": () if record.attentions_asked else None}


class GPT2LMHeadModel(GPT2PreTrainedModel, PreTrainedCausalLM):
    tied_weights_keys = {"lm_head.weight": "transformer.wte.weight"}
    output_class = CausalLMOutputWithCrossAttentions

    def __init__(self, config: GPT2Config) -> None:
        super().__init__(config)
        self.transformer = GPT2Model(config)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
