"""The built-in architectures by class name and by config model_type."""
from __future__ import annotations

from .gpt2 import GPT2LMHeadModel, GPT2Model
from .llama import (
                    LlamaForCausalLM,
                    LlamaModel,
                    MistralForCausalLM,
                    MistralModel,
                    Qwen2ForCausalLM,
                    Qwen2Model,
                    Qwen3ForCausalLM,
                    Qwen3Model,
)
from .modeling import PreTrainedModel

# What AutoModelForCausalLM builds for each config model_type (transformers' MODEL_FOR_CAUSAL_LM_MAPPING).
CAUSAL_LM_CLASSES: dict[str, type[PreTrainedModel]] = {
    "gpt2": GPT2LMHeadModel, "llama": LlamaForCausalLM, "mistral": MistralForCausalLM,
    "qwen2": Qwen2ForCausalLM, "qwen3": Qwen3ForCausalLM,
}

# Every built-in class, by the name config.architectures uses.
ARCHITECTURES: dict[str, type[PreTrainedModel]] = {
    cls.__name__: cls for cls in (GPT2LMHeadModel, GPT2Model, LlamaForCausalLM, LlamaModel, MistralForCausalLM,
                                  MistralModel, Qwen2ForCausalLM, Qwen2Model, Qwen3ForCausalLM, Qwen3Model)
}
