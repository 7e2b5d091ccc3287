"""The special tokens of a FastTokenizer as transformers 5 keeps them: named ones (bos_token, eos_token, ...,
model-specific names), extra ones, their ids as attributes (`pad_token_id`), assignment (`tokenizer.pad_token =
tokenizer.eos_token`), add_tokens / add_special_tokens, and the post-processor that adds BOS / EOS."""
from __future__ import annotations

from typing import Any

from .settings import SPECIAL_TOKENS_ATTRIBUTES


class SpecialTokens:
    """The special-token half of FastTokenizer (tokenization_utils_base.py and tokenization_utils_tokenizers.py
    of transformers 5.24); the subclass sets `_tokenizer` (the tokenizers.Tokenizer) and the attributes below."""

    _special_tokens_map: dict[str, Any]
    _extra_special_tokens: list[Any]
    special_token_attributes: list[str]
    _add_bos_token: bool
    _add_eos_token: bool

    @staticmethod
    def _check_token(key: str, value: Any) -> None:
        from tokenizers import AddedToken

        if not isinstance(value, (str, AddedToken)):
            raise TypeError(f"Special token {key} has to be either str or AddedToken but got: {type(value)}")

    def _add_missing_tokens(self, added_tokens_decoder: dict[int, Any]) -> None:
        """The config's added tokens and every special token the backend lacks, added as transformers adds them:
        it re-adds all of added_tokens_decoder (its duplicate check compares token reprs with ids, so it never
        matches), then each special token not yet in the vocabulary, marked special."""
        from tokenizers import AddedToken

        to_add = [token for _, token in sorted(added_tokens_decoder.items(), key=lambda item: item[0])]
        encoder = list(self.added_tokens_encoder) + [str(token) for token in to_add]
        for value in [*self._special_tokens_map.values(), *self._extra_special_tokens]:
            if value is not None and str(value) not in encoder and value not in to_add:
                to_add.append(value)
        named = [str(value) for value in self._special_tokens_map.values() if value]
        tokens = []
        for token in to_add:
            if isinstance(token, str):
                token = AddedToken(token, special=True)
            elif not token.special and str(token) in named:
                token.special = True
            tokens.append(token)
        if tokens:
            self._tokenizer.add_tokens(tokens)

    # --- special tokens: attributes, ids, and assignment (tokenizer.pad_token = tokenizer.eos_token) ---

    def __getattr__(self, key: str) -> Any:
        name = key.removesuffix("_ids").removesuffix("_id") if key.endswith(("_id", "_ids")) else key
        attributes = self.__dict__.get("special_token_attributes", SPECIAL_TOKENS_ATTRIBUTES)
        if name in attributes:
            value = self.__dict__.get("_special_tokens_map", {}).get(name)
            if value is None:
                return None
            return self.convert_tokens_to_ids(str(value)) if key != name else str(value)
        if name == "extra_special_tokens":
            tokens = [str(token) for token in self.__dict__.get("_extra_special_tokens", [])]
            return self.convert_tokens_to_ids(tokens) if key != name else tokens
        raise AttributeError(f"{type(self).__name__} has no attribute {key}")

    def __setattr__(self, key: str, value: Any) -> None:
        name = key.removesuffix("_ids").removesuffix("_id") if key.endswith(("_id", "_ids")) else key
        if name in self.__dict__.get("special_token_attributes", ()):
            if key != name and value is not None:
                value = self.convert_ids_to_tokens(value)
            if value is not None:
                self._check_token(name, value)
            self._special_tokens_map[name] = value
            return
        if name == "extra_special_tokens":
            if key != name and isinstance(value, (list, tuple)):
                value = [self.convert_ids_to_tokens(item) for item in value]
            self._extra_special_tokens[:] = [] if value is None else list(value)
            return
        object.__setattr__(self, key, value)

    @property
    def special_tokens_map(self) -> dict[str, str]:
        """The named special tokens that are set, as strings (bos_token, eos_token, ..., model-specific ones)."""
        return {name: str(self._special_tokens_map[name]) for name in self.special_token_attributes
                if self._special_tokens_map.get(name) is not None}

    @property
    def all_special_tokens(self) -> list[str]:
        """Every special token (named, then extra), each once, as strings."""
        tokens: list[str] = []
        for value in [*(self._special_tokens_map.get(name) for name in self.special_token_attributes),
                      *self._extra_special_tokens]:
            if value is not None and str(value) not in tokens:
                tokens.append(str(value))
        return tokens

    @property
    def all_special_ids(self) -> list[int]:
        """The ids of all_special_tokens."""
        return self.convert_tokens_to_ids(self.all_special_tokens)

    @property
    def add_bos_token(self) -> bool:
        return self._add_bos_token

    @add_bos_token.setter
    def add_bos_token(self, value: bool) -> None:
        self._add_bos_token = value
        self.update_post_processor()

    @property
    def add_eos_token(self) -> bool:
        return self._add_eos_token

    @add_eos_token.setter
    def add_eos_token(self, value: bool) -> None:
        self._add_eos_token = value
        self.update_post_processor()

    def update_post_processor(self) -> None:
        """Rebuilds the post-processor from add_bos_token / add_eos_token (transformers' TemplateProcessing)."""
        from tokenizers import processors

        bos, eos = self.bos_token, self.eos_token
        if bos is None:
            self._add_bos_token = False
        if eos is None:
            self._add_eos_token = False
        add_bos, add_eos = self._add_bos_token, self._add_eos_token
        single = f"{(bos + ':0 ') if add_bos else ''}$A:0{(' ' + eos + ':0') if add_eos else ''}"
        pair = f"{single}{(' ' + bos + ':1') if add_bos else ''} $B:1{(' ' + eos + ':1') if add_eos else ''}"
        special = ([(bos, self.bos_token_id)] if add_bos else []) + ([(eos, self.eos_token_id)] if add_eos else [])
        self._tokenizer.post_processor = processors.TemplateProcessing(single=single, pair=pair,
                                                                       special_tokens=special)

    def add_tokens(self, new_tokens: Any, special_tokens: bool = False) -> int:
        """Adds tokens (str or tokenizers.AddedToken) to the vocabulary; returns how many were new."""
        if not new_tokens:
            return 0
        new_tokens = new_tokens if isinstance(new_tokens, (list, tuple)) else [new_tokens]
        if special_tokens:
            return self._tokenizer.add_special_tokens(list(new_tokens))
        return self._tokenizer.add_tokens(list(new_tokens))

    def add_special_tokens(self, special_tokens_dict: dict[str, Any], replace_extra_special_tokens: bool = True
                           ) -> int:
        """Sets named special tokens (and `extra_special_tokens`, a list) and adds them to the vocabulary as
        special; returns how many tokens were new. Raises ValueError for an unknown key or a non-token value."""
        from tokenizers import AddedToken

        if not special_tokens_dict:
            return 0
        special_tokens_dict = dict(special_tokens_dict)
        if "additional_special_tokens" in special_tokens_dict and not special_tokens_dict.get("extra_special_tokens"):
            special_tokens_dict["extra_special_tokens"] = special_tokens_dict.pop("additional_special_tokens")
        allowed = set(self.special_token_attributes) | {"extra_special_tokens"}
        to_add: list[Any] = []
        for key, value in special_tokens_dict.items():
            if key not in allowed:
                raise ValueError(f"Key {key} is not a valid special token. Valid keys are: {allowed}")
            if key == "extra_special_tokens":
                if not isinstance(value, (list, tuple)) or not all(isinstance(t, (str, AddedToken)) for t in value):
                    raise ValueError(f"Tokens {value} for key {key} should all be str or AddedToken instances")
                new = [AddedToken(t, rstrip=False, lstrip=False, normalized=False, special=True)
                       if isinstance(t, str) else t for t in value
                       if replace_extra_special_tokens or str(t) not in self.extra_special_tokens]
                if replace_extra_special_tokens and new:
                    self._extra_special_tokens[:] = new
                else:
                    self._extra_special_tokens.extend(new)
                to_add.extend(new)
                continue
            if not isinstance(value, (str, AddedToken)):
                raise ValueError(f"Token {value} for key {key} should be a str or an AddedToken instance")
            if isinstance(value, str):
                value = AddedToken(value, rstrip=False, lstrip=False, normalized=False, special=True)
            setattr(self, key, value)
            to_add.append(value)
        return self.add_tokens(to_add, special_tokens=True)

