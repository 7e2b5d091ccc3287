"""The tokenizer's outputs and options: BatchEncoding (a dict of lists or tensors) and the padding and truncation
strategies, with transformers 5's names, defaults and checks (tokenization_utils_base.py)."""
from __future__ import annotations

from collections import UserDict
from typing import Any, Optional, Union

PADDING_STRATEGIES = ("longest", "max_length", "do_not_pad")
TRUNCATION_STRATEGIES = ("only_first", "only_second", "longest_first", "do_not_truncate")
# transformers' LARGE_INTEGER: a model_max_length above it means "no limit" (VERY_LARGE_INTEGER, 1e30, is the default).
LARGE_INTEGER = int(1e20)
VERY_LARGE_INTEGER = int(1e30)
TENSOR_TYPES = ("pt", "np")


class BatchEncoding(UserDict):
    """input_ids, attention_mask, ... as lists or tensors; keys are attributes too, as in transformers.

    `encodings` holds the `tokenizers.Encoding` of each sequence (None after `pad`-free conversions).
    """

    def __init__(self, data: Optional[dict[str, Any]] = None, encodings: Optional[list] = None,
                 tensor_type: Optional[str] = None) -> None:
        super().__init__(data)
        self.encodings = encodings
        self.convert_to_tensors(tensor_type)

    def __getattr__(self, item: str) -> Any:
        try:
            return self.data[item]
        except KeyError as err:
            raise AttributeError(item) from err

    def __getitem__(self, item: Union[str, int, slice]) -> Any:
        if isinstance(item, str):
            return self.data[item]
        if isinstance(item, int) and self.encodings is not None:
            return self.encodings[item]
        if isinstance(item, slice):
            return {key: self.data[key][item] for key in self.data}
        raise KeyError(f"Invalid key {item!r}: use a name such as 'input_ids', or an index when encodings exist")

    def tokens(self, batch_index: int = 0) -> list[str]:
        """The tokens (strings) of sequence `batch_index`."""
        return self._encoding(batch_index).tokens

    def word_ids(self, batch_index: int = 0) -> list[Optional[int]]:
        """The word index of each token of sequence `batch_index` (None for special tokens)."""
        return self._encoding(batch_index).word_ids

    def sequence_ids(self, batch_index: int = 0) -> list[Optional[int]]:
        """Which sequence of a pair (0 or 1) each token comes from; None for special tokens."""
        return self._encoding(batch_index).sequence_ids

    def _encoding(self, batch_index: int) -> Any:
        if not self.encodings:
            raise ValueError("tokens() is not available when using non-fast tokenizers (e.g. instance of a "
                             "`XxxTokenizerFast` class).")
        return self.encodings[batch_index]

    def convert_to_tensors(self, tensor_type: Optional[str] = None, prepend_batch_axis: bool = False
                           ) -> "BatchEncoding":
        """Converts every list value to a torch tensor ("pt") or a numpy array ("np"), as transformers does.

        Raises ValueError for other types and for ragged lists (pad or truncate them first)."""
        if tensor_type is None:
            return self
        tensor_type = getattr(tensor_type, "value", tensor_type)
        if tensor_type not in TENSOR_TYPES:
            raise ValueError(f"return_tensors={tensor_type!r}: warpload returns 'pt' (torch) or 'np' (numpy) "
                             "tensors, or lists with return_tensors=None")
        if tensor_type == "pt":
            import torch

            def as_tensor(value: Any) -> Any:
                return value if torch.is_tensor(value) else torch.tensor(value, dtype=torch.int64 if _is_empty(
                    value) else None)
        else:
            import numpy

            def as_tensor(value: Any) -> Any:
                return value if isinstance(value, numpy.ndarray) else numpy.asarray(
                    value, dtype=numpy.int64 if _is_empty(value) else None)
        for key, value in self.data.items():
            try:
                self.data[key] = as_tensor([value] if prepend_batch_axis else value)
            except (ValueError, TypeError) as err:
                raise ValueError(
                    "Unable to create tensor, you should probably activate truncation and/or padding with "
                    "'padding=True' 'truncation=True' to have batched tensors with the same length. Perhaps your "
                    f"features (`{key}` in this case) have excessive nesting (inputs type `list` where type `int` is "
                    "expected).") from err
        return self

    def to(self, device: Any, *, non_blocking: bool = False) -> "BatchEncoding":
        """Moves every tensor value to `device` (torch tensors only); returns self."""
        import torch

        self.data = {key: value.to(device=device, non_blocking=non_blocking) if torch.is_tensor(value) else value
                     for key, value in self.data.items()}
        return self


def _is_empty(value: Any) -> bool:
    return isinstance(value, (list, tuple)) and (len(value) == 0 or all(_is_empty(item) for item in value))


def padding_truncation(tokenizer: Any, padding: Any, truncation: Any, max_length: Optional[int],
                       pad_to_multiple_of: Optional[int], verbose: bool = True) -> tuple[str, str, Optional[int]]:
    """(padding strategy, truncation strategy, max_length) from __call__'s options, as transformers resolves them:
    max_length alone truncates; True means "longest" / "longest_first"; a missing max_length takes
    model_max_length, or turns the strategy off when the model has no limit. Raises ValueError for padding
    without a pad token and for a truncation length that is not a multiple of pad_to_multiple_of."""
    import warnings

    if max_length is not None and padding is False and truncation is None:
        truncation = "longest_first"
    if padding is True:
        if verbose and max_length is not None and truncation in (None, False, "do_not_truncate"):
            warnings.warn("`max_length` is ignored when `padding`=`True` and there is no truncation strategy. "
                          "To pad to max length, use `padding='max_length'`.", stacklevel=3)
        padding = "longest"
    elif padding is False or padding is None:
        padding = "do_not_pad"
    padding = _strategy(padding, PADDING_STRATEGIES, "padding")
    if truncation is True:
        truncation = "longest_first"
    elif truncation is False or truncation is None:
        truncation = "do_not_truncate"
    truncation = _strategy(truncation, TRUNCATION_STRATEGIES, "truncation")
    if max_length is None:
        if padding == "max_length":
            if tokenizer.model_max_length > LARGE_INTEGER:
                padding = "do_not_pad"
            else:
                max_length = tokenizer.model_max_length
        if truncation != "do_not_truncate":
            if tokenizer.model_max_length > LARGE_INTEGER:
                truncation = "do_not_truncate"
            else:
                max_length = tokenizer.model_max_length
    if padding != "do_not_pad" and (tokenizer.pad_token is None or tokenizer.pad_token_id < 0):
        raise ValueError("Asking to pad but the tokenizer does not have a padding token. Please select a token to "
                         "use as `pad_token` `(tokenizer.pad_token = tokenizer.eos_token e.g.)` or add a new pad "
                         "token via `tokenizer.add_special_tokens({'pad_token': '[PAD]'})`.")
    if (truncation != "do_not_truncate" and padding != "do_not_pad" and pad_to_multiple_of is not None
            and max_length is not None and max_length % pad_to_multiple_of != 0):
        raise ValueError("Truncation and padding are both activated but truncation length "
                         f"({max_length}) is not a multiple of pad_to_multiple_of ({pad_to_multiple_of}).")
    return padding, truncation, max_length


def _strategy(value: Any, choices: tuple[str, ...], option: str) -> str:
    value = getattr(value, "value", value)  # transformers' PaddingStrategy / TruncationStrategy enums
    if value not in choices:
        raise ValueError(f"{option}={value!r} is not a valid strategy; choose True, False or one of "
                         f"{', '.join(repr(choice) for choice in choices)}")
    return value


def pad_encodings(tokenizer: Any, encoded_inputs: Any, *, padding: Any = True, max_length: Optional[int] = None,
                  pad_to_multiple_of: Optional[int] = None, padding_side: Optional[str] = None,
                  return_attention_mask: Optional[bool] = None, return_tensors: Optional[str] = None,
                  verbose: bool = True) -> BatchEncoding:
    """tokenizer.pad as transformers 5 does it: one encoding or a batch (a dict of lists, or a list of dicts, of
    lists, tensors or arrays) padded with the tokenizer's pad token, side and pad_token_type_id; tensors in give
    tensors of their kind out. Raises ValueError without input_ids (the first model input name)."""
    if isinstance(encoded_inputs, (list, tuple)) and encoded_inputs and hasattr(encoded_inputs[0], "keys"):
        encoded_inputs = {key: [example[key] for example in encoded_inputs] for key in encoded_inputs[0].keys()}
    main = tokenizer.model_input_names[0]
    if main not in encoded_inputs:
        raise ValueError("You should supply an encoding or a list of encodings to this method that includes "
                         f"{main}, but you provided {list(encoded_inputs.keys())}")
    encoded_inputs = dict(encoded_inputs)
    if not encoded_inputs[main]:
        if return_attention_mask:
            encoded_inputs["attention_mask"] = []
        return BatchEncoding(encoded_inputs)
    first = encoded_inputs[main][0]
    if isinstance(first, (list, tuple)):
        first = next((item[0] for item in encoded_inputs[main] if len(item)), first)
    if not isinstance(first, (int, list, tuple)):
        kind = "pt" if type(first).__module__.startswith("torch") else "np"
        return_tensors = kind if return_tensors is None else return_tensors
        encoded_inputs = {key: value.tolist() if hasattr(value, "tolist") else [
            item.tolist() if hasattr(item, "tolist") else item for item in value]
            for key, value in encoded_inputs.items()}
    strategy, _, max_length = padding_truncation(tokenizer, padding, None, max_length, None, verbose)
    side = padding_side if padding_side is not None else tokenizer.padding_side
    with_mask = "attention_mask" in tokenizer.model_input_names if return_attention_mask is None \
        else return_attention_mask
    if not isinstance(encoded_inputs[main][0], (list, tuple)):
        return BatchEncoding(_pad_one(tokenizer, encoded_inputs, strategy, max_length, pad_to_multiple_of, side,
                                      with_mask), tensor_type=return_tensors)
    if strategy == "longest":
        max_length, strategy = max(len(ids) for ids in encoded_inputs[main]), "max_length"
    rows = [_pad_one(tokenizer, {key: value[index] for key, value in encoded_inputs.items()}, strategy, max_length,
                     pad_to_multiple_of, side, with_mask) for index in range(len(encoded_inputs[main]))]
    return BatchEncoding({key: [row[key] for row in rows] for key in rows[0]}, tensor_type=return_tensors)


def _pad_one(tokenizer: Any, inputs: dict[str, Any], strategy: str, max_length: Optional[int],
             pad_to_multiple_of: Optional[int], side: str, with_mask: bool) -> dict[str, Any]:
    """One sequence's fields padded (transformers' _pad): ids with pad_token_id, the mask with 0, token type ids
    with pad_token_type_id, the special tokens mask with 1."""
    main = tokenizer.model_input_names[0]
    ids = inputs[main]
    if strategy == "longest":
        max_length = len(ids)
    if max_length is not None and pad_to_multiple_of is not None and max_length % pad_to_multiple_of:
        max_length = (max_length // pad_to_multiple_of + 1) * pad_to_multiple_of
    if with_mask and "attention_mask" not in inputs:
        inputs["attention_mask"] = [1] * len(ids)
    if strategy == "do_not_pad" or len(ids) == max_length:
        return inputs
    fill = {main: tokenizer.pad_token_id, "attention_mask": 0, "token_type_ids": tokenizer.pad_token_type_id,
            "special_tokens_mask": 1}
    count = max_length - len(ids)
    for key, value in fill.items():
        if key in inputs and (key != "attention_mask" or with_mask):
            inputs[key] = inputs[key] + [value] * count if side == "right" else [value] * count + inputs[key]
    return inputs
