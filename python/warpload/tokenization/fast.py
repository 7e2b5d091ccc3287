"""FastTokenizer: a `tokenizers.Tokenizer` (tokenizer.json) with transformers 5's TokenizersBackend API and
outputs: special tokens and their ids, __call__ (padding, truncation, tensors), encode, decode, chat templates."""
from __future__ import annotations

import copy
import logging
from typing import Any, Optional, Union

from .chat import ChatTemplates
from .encoding import VERY_LARGE_INTEGER, BatchEncoding, pad_encodings, padding_truncation
from .settings import SPECIAL_TOKENS_ATTRIBUTES
from .special_tokens import SpecialTokens

logger = logging.getLogger(__name__)


class FastTokenizer(SpecialTokens, ChatTemplates):
    """A tokenizer built from tokenizer.json and tokenizer_config.json the way transformers 5 builds its
    TokenizersBackend (AutoTokenizer's class for such repos), so encodings, decodings and chat renderings equal
    transformers' on the same files. Built by AutoTokenizer.from_pretrained."""

    padding_side = "right"
    truncation_side = "right"

    def __init__(self, backend: Any, kwargs: dict[str, Any], *, explicit_bos_eos: bool,
                 class_name: str = "TokenizersBackend", defaults: Optional[dict[str, Any]] = None) -> None:
        """`backend` is the tokenizers.Tokenizer, `kwargs` what settings.tokenizer_kwargs read (and the caller's
        options); explicit_bos_eos says the caller passed add_bos_token / add_eos_token; class_name and defaults
        are those of the class transformers would build (tokenization/classes.py)."""
        object.__setattr__(self, "_special_tokens_map", dict.fromkeys(SPECIAL_TOKENS_ATTRIBUTES))
        object.__setattr__(self, "_extra_special_tokens", [])
        self.special_token_attributes = list(SPECIAL_TOKENS_ATTRIBUTES)
        self._tokenizer = backend
        self._take_file_truncation_and_padding(kwargs)
        for key, value in (defaults or {}).items():
            kwargs.setdefault(key, value)
        self.class_name = class_name
        self._add_bos_token = kwargs.get("add_bos_token", False)
        self._add_eos_token = kwargs.get("add_eos_token", False)
        update_post_processor = explicit_bos_eos or backend.post_processor is None
        added_tokens_decoder = kwargs.get("added_tokens_decoder", {})
        self._read_options(kwargs)
        backend.encode_special_tokens = self.split_special_tokens
        self._add_missing_tokens(added_tokens_decoder)
        if update_post_processor or backend.post_processor is None:
            self.update_post_processor()

    def _take_file_truncation_and_padding(self, kwargs: dict[str, Any]) -> None:
        """Truncation and padding saved in tokenizer.json become the defaults, as in transformers."""
        truncation = self._tokenizer.truncation
        if truncation is not None:
            self._tokenizer.enable_truncation(**truncation)
            kwargs.setdefault("max_length", truncation["max_length"])
            kwargs.setdefault("truncation_side", truncation["direction"])
        padding = self._tokenizer.padding
        if padding is not None:
            self._tokenizer.enable_padding(**padding)
            kwargs.setdefault("pad_token", padding["pad_token"])
            kwargs.setdefault("pad_token_type_id", padding["pad_type_id"])
            kwargs.setdefault("padding_side", padding["direction"])

    def _read_options(self, kwargs: dict[str, Any]) -> None:
        """PreTrainedTokenizerBase.__init__: special tokens, lengths, sides, clean-up, chat template."""
        if "additional_special_tokens" in kwargs and "extra_special_tokens" not in kwargs:
            kwargs["extra_special_tokens"] = kwargs.pop("additional_special_tokens")
        self.init_kwargs = copy.deepcopy(kwargs)
        kwargs = dict(kwargs)
        self.name_or_path = kwargs.pop("name_or_path", "")
        for key in SPECIAL_TOKENS_ATTRIBUTES:
            value = kwargs.pop(key, None)
            if value is not None:
                self._check_token(key, value)
                self._special_tokens_map[key] = value
        extra = kwargs.pop("extra_special_tokens", None)
        model_specific = dict(kwargs.pop("model_specific_special_tokens", None) or {})
        if isinstance(extra, dict):
            model_specific.update(extra)
        elif isinstance(extra, (list, tuple)):
            self._extra_special_tokens[:] = list(extra)
        elif extra is not None:
            raise TypeError("extra_special_tokens must be a list/tuple of tokens or a dict of named tokens")
        for key, value in model_specific.items():
            self._check_token(key, value)
            self.special_token_attributes.append(key)
            self._special_tokens_map[key] = value
        max_length = kwargs.pop("model_max_length", kwargs.pop("max_len", None))
        self.model_max_length = max_length if max_length is not None else VERY_LARGE_INTEGER
        self.padding_side = kwargs.pop("padding_side", self.padding_side)
        self.truncation_side = kwargs.pop("truncation_side", self.truncation_side)
        for side in (self.padding_side, self.truncation_side):
            if side not in ("right", "left"):
                raise ValueError(f"Padding and truncation sides are 'right' or 'left', not {side!r}")
        self.model_input_names = list(kwargs.pop("model_input_names", ["input_ids", "attention_mask"]))
        self.clean_up_tokenization_spaces = kwargs.pop("clean_up_tokenization_spaces", False)
        self.clean_up_tokenization_spaces_for_bpe_even_though_it_will_corrupt_output = kwargs.pop(
            "clean_up_tokenization_spaces_for_bpe_even_though_it_will_corrupt_output", False)
        self.split_special_tokens = kwargs.pop("split_special_tokens", False)
        # transformers keeps pad_token_type_id at 0 whatever the keywords say (its _pad_token_type_id).
        self.pad_token_type_id = 0
        template = kwargs.pop("chat_template", None)
        if isinstance(template, (list, tuple)):
            template = {entry["name"]: entry["template"] for entry in template}
        self.chat_template = template

    # --- vocabulary ---

    @property
    def is_fast(self) -> bool:
        return True

    @property
    def backend_tokenizer(self) -> Any:
        """The tokenizers.Tokenizer underneath."""
        return self._tokenizer

    @property
    def vocab_size(self) -> int:
        """Size of the base vocabulary, without added tokens."""
        return self._tokenizer.get_vocab_size(with_added_tokens=False)

    def __len__(self) -> int:
        return self._tokenizer.get_vocab_size(with_added_tokens=True)

    def __bool__(self) -> bool:
        return True

    def get_vocab(self) -> dict[str, int]:
        """Every token (added ones included) and its id."""
        return self._tokenizer.get_vocab(with_added_tokens=True)

    @property
    def vocab(self) -> dict[str, int]:
        return self.get_vocab()

    @property
    def added_tokens_decoder(self) -> dict[int, Any]:
        """{id: tokenizers.AddedToken} of the added tokens."""
        return self._tokenizer.get_added_tokens_decoder()

    @property
    def added_tokens_encoder(self) -> dict[str, int]:
        """{content: id} of the added tokens, by id."""
        return {token.content: index for index, token in sorted(self.added_tokens_decoder.items())}

    def get_added_vocab(self) -> dict[str, int]:
        return self.added_tokens_encoder

    def convert_tokens_to_ids(self, tokens: Union[str, list[str]]) -> Union[Optional[int], list[Optional[int]]]:
        """The id of each token; unknown tokens get unk_token_id (None without an unk token)."""
        if isinstance(tokens, str):
            index = self._tokenizer.token_to_id(tokens)
            return self.unk_token_id if index is None else index
        return [self.convert_tokens_to_ids(token) for token in tokens]

    def convert_ids_to_tokens(self, ids: Union[int, list[int]], skip_special_tokens: bool = False
                              ) -> Union[Optional[str], list[Optional[str]]]:
        """The token of each id (None for an id outside the vocabulary)."""
        if isinstance(ids, int):
            return self._tokenizer.id_to_token(ids)
        skip = set(self.all_special_ids) if skip_special_tokens else set()
        return [self._tokenizer.id_to_token(int(index)) for index in ids if int(index) not in skip]

    def _convert_id_to_token(self, index: int) -> Optional[str]:
        # transformers' StopStringCriteria (generate's stop_strings) calls this hook of its tokenizers by name.
        return self._tokenizer.id_to_token(int(index))

    def convert_tokens_to_string(self, tokens: list[str]) -> str:
        decoder = self._tokenizer.decoder
        return decoder.decode(tokens) if decoder is not None else " ".join(tokens)

    def num_special_tokens_to_add(self, pair: bool = False) -> int:
        return self._tokenizer.num_special_tokens_to_add(pair)

    # --- encoding ---

    def __call__(self, text: Any, text_pair: Any = None, *, add_special_tokens: bool = True, padding: Any = False,
                 truncation: Any = None, max_length: Optional[int] = None, stride: int = 0,
                 is_split_into_words: bool = False, pad_to_multiple_of: Optional[int] = None,
                 padding_side: Optional[str] = None, return_tensors: Optional[str] = None,
                 return_token_type_ids: Optional[bool] = None, return_attention_mask: Optional[bool] = None,
                 return_overflowing_tokens: bool = False, return_special_tokens_mask: bool = False,
                 return_offsets_mapping: bool = False, return_length: bool = False, verbose: bool = True,
                 split_special_tokens: Optional[bool] = None) -> BatchEncoding:
        """Encodes one text, a batch, or pairs, as transformers' tokenizer(...) does: a BatchEncoding of lists
        (one sequence: unbatched) or of "pt" / "np" tensors. Raises ValueError as transformers does (padding
        without a pad token, ragged tensors, an invalid strategy)."""
        padding, truncation, max_length = padding_truncation(self, padding, truncation, max_length,
                                                             pad_to_multiple_of, verbose)
        batched = (isinstance(text, (list, tuple)) and bool(text) and isinstance(text[0], (list, tuple))
                   if is_split_into_words else isinstance(text, (list, tuple)))
        if batched:
            if isinstance(text_pair, str):
                raise TypeError("when tokenizing batches of text, `text_pair` must be a list or tuple with the same "
                                "length as `text`.")
            if text_pair is not None and len(text) != len(text_pair):
                raise ValueError(f"batch length of `text`: {len(text)} does not match batch length of `text_pair`: "
                                 f"{len(text_pair)}.")
            inputs = list(zip(text, text_pair)) if text_pair is not None else list(text)
        else:
            inputs = [(text, text_pair)] if text_pair else [text]
        self._set_truncation_and_padding(padding, truncation, max_length, stride, pad_to_multiple_of, padding_side)
        split = self.split_special_tokens if split_special_tokens is None else split_special_tokens
        if self._tokenizer.encode_special_tokens != split:
            self._tokenizer.encode_special_tokens = split
        encodings = self._tokenizer.encode_batch(inputs, add_special_tokens=add_special_tokens,
                                                 is_pretokenized=is_split_into_words)
        with_types = ("token_type_ids" in self.model_input_names if return_token_type_ids is None
                      else return_token_type_ids)
        with_mask = "attention_mask" in self.model_input_names if return_attention_mask is None \
            else return_attention_mask
        fields = {"input_ids": "ids", "token_type_ids": "type_ids" if with_types else None,
                  "attention_mask": "attention_mask" if with_mask else None,
                  "special_tokens_mask": "special_tokens_mask" if return_special_tokens_mask else None,
                  "offset_mapping": "offsets" if return_offsets_mapping else None}
        flat, sample = [], []
        for index, encoding in enumerate(encodings):
            pieces = [encoding, *encoding.overflowing] if return_overflowing_tokens else [encoding]
            flat += pieces
            sample += [index] * len(pieces)
        data: dict[str, Any] = {key: [getattr(piece, attribute) for piece in flat]
                                for key, attribute in fields.items() if attribute is not None}
        if return_length:
            data["length"] = [len(piece.ids) for piece in flat]
        if return_overflowing_tokens:
            data["overflow_to_sample_mapping"] = sample
        self._warn_if_too_long(data["input_ids"], max_length, verbose)
        output = BatchEncoding(data, flat, tensor_type=return_tensors)
        if not batched and return_tensors is None and not return_overflowing_tokens:
            output = BatchEncoding({key: value[0] if value and isinstance(value[0], list) else value
                                    for key, value in output.items()}, output.encodings)
        return output

    def _set_truncation_and_padding(self, padding: str, truncation: str, max_length: Optional[int], stride: int,
                                    pad_to_multiple_of: Optional[int], padding_side: Optional[str]) -> None:
        """The backend's truncation and padding for this call (transformers' set_truncation_and_padding)."""
        backend = self._tokenizer
        if truncation == "do_not_truncate":
            if backend.truncation is not None:
                backend.no_truncation()
        else:
            target = {"max_length": max_length, "stride": stride, "strategy": truncation,
                      "direction": self.truncation_side}
            current = None if backend.truncation is None else {key: backend.truncation.get(key) for key in target}
            if current != target:
                backend.enable_truncation(**target)
        if padding == "do_not_pad":
            if backend.padding is not None:
                backend.no_padding()
        else:
            target = {"length": max_length if padding == "max_length" else None,
                      "direction": padding_side if padding_side is not None else self.padding_side,
                      "pad_id": self.pad_token_id, "pad_token": self.pad_token, "pad_type_id": self.pad_token_type_id,
                      "pad_to_multiple_of": pad_to_multiple_of}
            if backend.padding != target:
                backend.enable_padding(**target)

    def _warn_if_too_long(self, input_ids: list[list[int]], max_length: Optional[int], verbose: bool) -> None:
        if max_length is None and verbose and any(len(ids) > self.model_max_length for ids in input_ids):
            logger.warning("Token indices sequence length is longer than the specified maximum sequence length for "
                           "this model (%d > %d). Running this sequence through the model will result in indexing "
                           "errors", max(len(ids) for ids in input_ids), self.model_max_length)

    def encode(self, text: Any, text_pair: Any = None, add_special_tokens: bool = True, padding: Any = False,
               truncation: Any = None, max_length: Optional[int] = None, stride: int = 0,
               padding_side: Optional[str] = None, return_tensors: Optional[str] = None, **kwargs: Any) -> Any:
        """The input_ids of tokenizer(text, ...): a list of ids (a tensor with return_tensors)."""
        return self(text, text_pair, add_special_tokens=add_special_tokens, padding=padding, truncation=truncation,
                    max_length=max_length, stride=stride, padding_side=padding_side, return_tensors=return_tensors,
                    **kwargs)["input_ids"]

    def pad(self, encoded_inputs: Any, padding: Any = True, max_length: Optional[int] = None,
            pad_to_multiple_of: Optional[int] = None, padding_side: Optional[str] = None,
            return_attention_mask: Optional[bool] = None, return_tensors: Optional[str] = None,
            verbose: bool = True) -> BatchEncoding:
        """Pads encodings already made (a dict of lists, a list of dicts, tensors) as transformers' pad does."""
        return pad_encodings(self, encoded_inputs, padding=padding, max_length=max_length,
                             pad_to_multiple_of=pad_to_multiple_of, padding_side=padding_side,
                             return_attention_mask=return_attention_mask, return_tensors=return_tensors,
                             verbose=verbose)

    def tokenize(self, text: str, pair: Optional[str] = None, add_special_tokens: bool = False,
                 **kwargs: Any) -> list[str]:
        """The tokens (strings) of `text`."""
        return self(text, pair, add_special_tokens=add_special_tokens, **kwargs).tokens()

    # --- decoding ---

    def decode(self, token_ids: Any, skip_special_tokens: bool = False,
               clean_up_tokenization_spaces: Optional[bool] = None, **kwargs: Any) -> Union[str, list[str]]:
        """The text of a sequence of ids (a list, tensor or array); a list of texts for a batch."""
        kwargs.pop("use_source_tokenizer", None)
        token_ids = _python_ids(token_ids)
        if isinstance(token_ids, (list, tuple)) and token_ids and isinstance(token_ids[0], (list, tuple)):
            return [self._decode(ids, skip_special_tokens, clean_up_tokenization_spaces) for ids in token_ids]
        return self._decode(token_ids, skip_special_tokens, clean_up_tokenization_spaces)

    def batch_decode(self, sequences: Any, skip_special_tokens: bool = False,
                     clean_up_tokenization_spaces: Optional[bool] = None, **kwargs: Any) -> list[str]:
        """decode() of each sequence of a batch."""
        sequences = _python_ids(sequences)
        if len(sequences) == 0:
            return []
        result = self.decode(sequences, skip_special_tokens, clean_up_tokenization_spaces, **kwargs)
        return [result] if isinstance(result, str) else result

    def _decode(self, token_ids: Any, skip_special_tokens: bool, clean_up: Optional[bool]) -> str:
        if isinstance(token_ids, int):
            token_ids = [token_ids]
        if isinstance(token_ids, dict):
            token_ids = token_ids["input_ids"]
        text = self._tokenizer.decode(token_ids, skip_special_tokens=skip_special_tokens)
        clean_up = self.clean_up_tokenization_spaces if clean_up is None else clean_up
        if not clean_up:
            return text
        # transformers skips the clean-up for BPE models: it was written for WordPiece and strips real spaces.
        if (type(self._tokenizer.model).__name__ == "BPE"
                and not self.clean_up_tokenization_spaces_for_bpe_even_though_it_will_corrupt_output):
            logger.warning("Ignoring clean_up_tokenization_spaces=True for a BPE tokenizer: the clean-up is designed "
                           "for WordPiece tokenizers and strips spaces before punctuation.")
            return text
        return clean_up_tokenization(text)

    # --- saving ---

    def save_pretrained(self, save_directory: Any, legacy_format: Optional[bool] = None,
                        filename_prefix: Optional[str] = None, push_to_hub: bool = False, **kwargs: Any
                        ) -> tuple[str, ...]:
        """Writes tokenizer_config.json, chat_template.jinja (and additional_chat_templates/) and tokenizer.json as
        transformers 5 does, so transformers' AutoTokenizer (and warpload's) loads them back equal; returns the
        files written. push_to_hub is not supported (NotImplementedError)."""
        from .saving import save_tokenizer

        if push_to_hub:
            raise NotImplementedError("push_to_hub=True is not implemented by warpload; upload the saved folder with "
                                      "huggingface_hub.upload_folder")
        return save_tokenizer(self, save_directory, filename_prefix=filename_prefix,
                              save_jinja_files=kwargs.get("save_jinja_files", True))

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(name_or_path='{self.name_or_path}', vocab_size={self.vocab_size}, "
                f"model_max_length={self.model_max_length}, padding_side='{self.padding_side}', "
                f"truncation_side='{self.truncation_side}', special_tokens={self.special_tokens_map})")


def clean_up_tokenization(text: str) -> str:
    """transformers' clean-up of spaces before punctuation and English contractions."""
    for before, after in ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"),
                          (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re")):
        text = text.replace(before, after)
    return text


def _python_ids(value: Any) -> Any:
    """Token ids as Python ints and lists, from lists, torch tensors or numpy arrays."""
    if hasattr(value, "tolist") and callable(value.tolist):
        return value.tolist()
    if isinstance(value, (list, tuple)):
        return [_python_ids(item) for item in value]
    if isinstance(value, dict):
        return {key: _python_ids(item) for key, item in value.items()}
    return value
