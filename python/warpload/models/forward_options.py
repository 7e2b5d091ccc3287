"""The options of one forward call, resolved once against the config: attention implementation, what to record
(hidden states, attention weights), tuple or ModelOutput, and the cache argument under either of its names."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Optional

from .config import PretrainedConfig

logger = logging.getLogger(__name__)

# attn_implementation values the built-in models run themselves (transformers' default is sdpa).
NATIVE_ATTENTION = ("sdpa", "eager")
DEFAULT_ATTENTION = "sdpa"


def attention_implementation(config: PretrainedConfig) -> str:
    """`config._attn_implementation` (set by from_pretrained's attn_implementation=), else sdpa."""
    return config_value(config, "_attn_implementation", None) or DEFAULT_ATTENTION


def config_value(config: PretrainedConfig, name: str, default: Any) -> Any:
    """A config field, else `default`. Read from the instance: getattr on an absent field raises inside
    PretrainedConfig.__getattr__, a few microseconds on every forward of the generate loop."""
    fields = vars(config)
    if name in fields:
        return fields[name]
    defined = hasattr(type(config), name) or name in getattr(config, "attribute_map", {})
    return getattr(config, name, default) if defined else default


def cache_argument(cache: Any, past_key_values: Any) -> Any:
    """The cache passed as `cache` (transformers 5's name) or `past_key_values` (the older one, still accepted)."""
    if past_key_values is None:
        return cache
    if cache is not None:
        raise ValueError("You cannot specify both `cache` and `past_key_values`. use `cache` only.")
    return past_key_values


class SdpaWeightsWarning:
    """transformers 5 warns once per process that sdpa returns no attention weights, then returns ()."""

    warned = False

    @classmethod
    def warn_once(cls) -> None:
        if not cls.warned:
            cls.warned = True
            logger.warning("`sdpa` attention does not support `output_attentions=True`. Please set your attention "
                           "to `eager` if you want any of these features.")


@dataclass
class ForwardRecord:
    """What a forward call returns beyond the last hidden states, filled by the layer loop.

    `hidden_states` collects the input of every layer and then the final normed output (transformers'
    order: embeddings first); `attentions` each layer's weights, which only eager attention has
    (under sdpa, asking for them gives () and a warning, as transformers 5 does).
    """

    eager: bool
    hidden_states: Optional[list[Any]]
    attentions: Optional[list[Any]]
    attentions_asked: bool
    return_dict: bool

    @classmethod
    def of(cls, config: PretrainedConfig, output_attentions: Optional[bool], output_hidden_states: Optional[bool],
           return_dict: Optional[bool]) -> "ForwardRecord":
        """The options given, else the config's (output_attentions, output_hidden_states, return_dict)."""
        if output_attentions is None:
            output_attentions = bool(config_value(config, "output_attentions", False))
        if output_hidden_states is None:
            output_hidden_states = bool(config_value(config, "output_hidden_states", False))
        if return_dict is None:
            return_dict = bool(config_value(config, "return_dict", True))
        eager = attention_implementation(config) == "eager"
        if output_attentions and not eager:
            SdpaWeightsWarning.warn_once()
        return cls(eager, [] if output_hidden_states else None, [] if output_attentions and eager else None,
                   output_attentions, return_dict)

    def hidden_states_tuple(self) -> Optional[tuple[Any, ...]]:
        return None if self.hidden_states is None else tuple(self.hidden_states)

    def attentions_tuple(self) -> Optional[tuple[Any, ...]]:
        if not self.attentions_asked:
            return None
        return () if self.attentions is None else tuple(self.attentions)
