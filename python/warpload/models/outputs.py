"""What the built-in models' forward returns, with transformers 5's ModelOutput semantics and field names."""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Optional

import torch

# transformers 5 renamed the cache field `past_key_values` to `cache` and still answers to the old name.
_OLD_CACHE_NAMES = ("past_key_values", "cache_params")


def _field_name(key: str) -> str:
    return "cache" if key in _OLD_CACHE_NAMES else key


class ModelOutput(OrderedDict):
    """A dataclass that is also an ordered dict of its fields that are not None, as transformers' ModelOutput.

    Subclasses are `@dataclass(eq=False, init=False)`: this __init__ takes the fields, by position or
    name (`past_key_values=` for `cache` too).

    `out.logits`, `out["logits"]`, `out[0]` (fields that are None are skipped: `out[0]` is the loss
    only when there is one), `out.to_tuple()`, `out.keys()`. `past_key_values` reads the `cache` field.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # Every forward builds one: filling the instance and the dict directly costs half of what the
        # dataclass __init__ (a __setattr__ call per field) does.
        names = self.__dataclass_fields__
        if args:
            kwargs.update(zip(names, args))
        for old in _OLD_CACHE_NAMES:
            if old in kwargs:
                kwargs["cache"] = kwargs.pop(old)
        if not kwargs.keys() <= names.keys():
            raise TypeError(f"{type(self).__name__} has no field(s) {sorted(kwargs.keys() - names.keys())}")
        instance = self.__dict__
        for name in names:
            value = kwargs.get(name)
            instance[name] = value
            if value is not None:
                OrderedDict.__setitem__(self, name, value)

    def __setattr__(self, name: str, value: Any) -> None:
        name = _field_name(name)
        if value is not None and name in self.__dataclass_fields__:
            OrderedDict.__setitem__(self, name, value)
        object.__setattr__(self, name, value)

    def __setitem__(self, key: str, value: Any) -> None:
        key = _field_name(key)
        super().__setitem__(key, value)
        super().__setattr__(key, value)

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, str):
            return super().__getitem__(_field_name(key))
        return self.to_tuple()[key]

    def __contains__(self, key: object) -> bool:
        return super().__contains__(_field_name(key) if isinstance(key, str) else key)

    def get(self, key: str, default: Any = None) -> Any:
        return super().get(_field_name(key), default)

    def __reduce__(self) -> Any:
        # Rebuilt from the dataclass fields (OrderedDict's own reduce would call __init__ without them).
        return type(self), tuple(getattr(self, name) for name in type(self).__dataclass_fields__)

    def __delitem__(self, key: Any) -> None:
        raise TypeError(f"{type(self).__name__} does not support deleting fields")

    def to_tuple(self) -> tuple[Any, ...]:
        """The values of the fields that are not None, in field order."""
        return tuple(self.values())

    @property
    def past_key_values(self) -> Any:
        """The `cache` field under its transformers 4 name."""
        return getattr(self, "cache", None)


@dataclass(eq=False, init=False)
class BaseModelOutputWithPast(ModelOutput):
    """What a Llama-family base model returns: the hidden states after the final norm, and the cache."""

    last_hidden_state: Optional[torch.Tensor] = None
    cache: Any = None
    hidden_states: Optional[tuple[torch.Tensor, ...]] = None
    attentions: Optional[tuple[torch.Tensor, ...]] = None


@dataclass(eq=False, init=False)
class BaseModelOutputWithPastAndCrossAttentions(BaseModelOutputWithPast):
    """What GPT2Model returns (cross_attentions is () when attentions are asked for: GPT-2 has no encoder here)."""

    cross_attentions: Optional[tuple[torch.Tensor, ...]] = None


@dataclass(eq=False, init=False)
class CausalLMOutputWithPast(ModelOutput):
    """What a Llama-family causal LM returns: the loss when labels were given, next-token logits, the cache."""

    loss: Optional[torch.Tensor] = None
    logits: Optional[torch.Tensor] = None
    cache: Any = None
    hidden_states: Optional[tuple[torch.Tensor, ...]] = None
    attentions: Optional[tuple[torch.Tensor, ...]] = None


@dataclass(eq=False, init=False)
class CausalLMOutputWithCrossAttentions(CausalLMOutputWithPast):
    """What GPT2LMHeadModel returns."""

    cross_attentions: Optional[tuple[torch.Tensor, ...]] = None
