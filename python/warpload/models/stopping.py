"""Stopping criteria of generate: max length, max time, eos tokens, stop strings, and the user's criteria.

Each criterion is a callable `(input_ids, scores) -> (rows,) bool tensor`, True where a row is done,
so transformers' StoppingCriteria objects passed by a user combine with these by OR, as in its
StoppingCriteriaList.
"""
from __future__ import annotations

import time
from typing import Any, Callable, Optional, Sequence

import torch

from ..errors import GenerationOptionError

StoppingCriterion = Callable[..., torch.Tensor]


class MaxLength:
    def __init__(self, max_length: int) -> None:
        self.max_length = max_length

    def __call__(self, input_ids: torch.Tensor, scores: Any, **kwargs: Any) -> torch.Tensor:
        return torch.full((input_ids.shape[0],), input_ids.shape[-1] >= self.max_length, device=input_ids.device,
                          dtype=torch.bool)


class MaxTime:
    """Done once `max_time` seconds have passed since generate started (transformers times from the criterion's
    creation, just before decoding)."""

    def __init__(self, max_time: float) -> None:
        self.max_time = max_time
        self.start = time.time()

    def __call__(self, input_ids: torch.Tensor, scores: Any, **kwargs: Any) -> torch.Tensor:
        return torch.full((input_ids.shape[0],), time.time() - self.start > self.max_time, device=input_ids.device,
                          dtype=torch.bool)


class EosToken:
    def __init__(self, eos: torch.Tensor) -> None:
        self.eos_token_id = eos

    def __call__(self, input_ids: torch.Tensor, scores: Any, **kwargs: Any) -> torch.Tensor:
        return torch.isin(input_ids[:, -1], self.eos_token_id.to(input_ids.device))


class StopStrings:
    """Done when a stop string ends inside the last token: it overlaps the final token's text and runs up to
    the end of the sequence or past it, as transformers' StopStringCriteria decides.

    Token texts come from the tokenizer once: byte-level vocabularies (GPT-2 style) are matched as bytes,
    others as the strings the tokenizer gives each token after a fixed prefix (so SentencePiece's
    leading-space markers turn into spaces).
    """

    def __init__(self, stop_strings: Sequence[str], tokenizer: Any) -> None:
        self.stop_strings = [stop_strings] if isinstance(stop_strings, str) else list(stop_strings)
        self.token_texts = token_texts(tokenizer)
        byte_level = bool(self.token_texts) and isinstance(next(iter(self.token_texts.values())), bytes)
        self.targets = [s.encode("utf-8") for s in self.stop_strings] if byte_level else self.stop_strings
        self.longest = max(len(target) for target in self.targets)
        self.empty = b"" if byte_level else ""

    def __call__(self, input_ids: torch.Tensor, scores: Any, **kwargs: Any) -> torch.Tensor:
        done = [self.row_is_done(row) for row in input_ids[:, -self.longest:].tolist()]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)

    def row_is_done(self, tokens: list[int]) -> bool:
        texts = [self.token_texts.get(token, self.empty) for token in tokens]
        text = self.empty.join(texts)
        last_start = len(text) - len(texts[-1])
        if len(texts[-1]) == 0:
            return False
        # The stop string must start at or before the last token's first character and end within the text.
        return any(text.startswith(target, start)
                   for target in self.targets
                   for start in range(max(0, last_start - len(target) + 1), last_start + 1))


def token_texts(tokenizer: Any) -> dict[int, Any]:
    """Each token id's text: bytes for byte-level vocabularies, else str (transformers' clean_tokenizer_vocab)."""
    vocab = tokenizer.get_vocab()
    decoder = getattr(getattr(tokenizer, "backend_tokenizer", None), "decoder", None)
    byte_decoder = {char: byte for byte, char in bytes_to_unicode().items()}
    if type(decoder).__name__ == "ByteLevel":
        texts: dict[int, Any] = {}
        for token, index in vocab.items():
            if all(char in byte_decoder for char in token):
                texts[index] = bytes(byte_decoder[char] for char in token)
            else:
                texts[index] = token.encode("utf-8")
        return texts
    prefix = "abcdef"
    prefix_ids = tokenizer(prefix, add_special_tokens=False)["input_ids"]
    prefix_tokens = tokenizer.convert_ids_to_tokens(prefix_ids)
    texts = {}
    for token, index in vocab.items():
        text = tokenizer.convert_tokens_to_string(prefix_tokens + [token])
        texts[index] = text[text.index(prefix) + len(prefix):]
    return texts


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character table (the ByteLevel pre-tokenizer's alphabet)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) \
        + list(range(ord("®"), ord("ÿ") + 1))
    table = {byte: chr(byte) for byte in printable}
    extra = 0
    for byte in range(256):
        if byte not in table:
            table[byte] = chr(256 + extra)
            extra += 1
    return table


class CriteriaChain:
    """Criteria combined by OR, as transformers' StoppingCriteriaList is called."""

    def __init__(self, criteria: list[StoppingCriterion]) -> None:
        self.criteria = criteria

    def __call__(self, input_ids: torch.Tensor, scores: Any) -> torch.Tensor:
        done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        for criterion in self.criteria:
            done = done | criterion(input_ids, scores)
        return done


def build_criteria(config: Any, eos: torch.Tensor, tokenizer: Optional[Any],
                   user_criteria: Sequence[StoppingCriterion]) -> CriteriaChain:
    """transformers' _get_stopping_criteria: max length, max time, stop strings, eos, then the user's criteria."""
    criteria: list[StoppingCriterion] = []
    if config.max_length is not None:
        criteria.append(MaxLength(config.max_length))
    if config.max_time is not None:
        criteria.append(MaxTime(config.max_time))
    if config.stop_strings is not None:
        if tokenizer is None:
            raise GenerationOptionError(
                "There are one or more stop strings, either in the arguments to `generate` or in the model's "
                "generation config, but we could not locate a tokenizer. When generating with stop strings, you "
                "must pass the model's tokenizer to the `tokenizer` argument of `generate`.")
        criteria.append(StopStrings(config.stop_strings, tokenizer))
    if eos.numel():
        criteria.append(EosToken(eos))
    criteria.extend(user_criteria)
    return CriteriaChain(criteria)
