"""generate() for the built-in models: transformers' options, greedy, sampled and beam decoding over a KV cache.

The options resolve as in transformers 5 (the call, then model.generation_config, then its global
defaults); logits processors and stopping criteria are built in its order (logits_processors.py,
stopping.py), so results are token-identical. Nothing here imports transformers: its processor,
criteria and streamer objects work because they are plain callables and `put`/`end` objects.
"""
from __future__ import annotations

import copy
import logging
from typing import Any, Optional, Sequence, Union

import torch

from ..errors import GenerationOptionError, UnsupportedGenerationOptionError
from .attention import KVCache
from .beam_search import beam_search
from .generation_config import GENERATE_DEFAULTS, GenerationConfig
from .generation_output import GenerateDecoderOnlyOutput
from .logits_processors import build_processors
from .stopping import build_criteria

logger = logging.getLogger(__name__)

# transformers options not implemented here, with the values that leave them off. A checkpoint's
# generation_config.json that sets one is warned about and ignored; a call that asks for one raises.
UNSUPPORTED: dict[str, tuple[Any, ...]] = {
    "use_mtp": (False,), "top_h": (), "epsilon_cutoff": (0.0, 0), "eta_cutoff": (0.0, 0),
    "encoder_repetition_penalty": (1.0, 1), "encoder_no_repeat_ngram_size": (0,), "forced_bos_token_id": (),
    "forced_eos_token_id": (), "remove_invalid_values": (False,), "exponential_decay_length_penalty": (),
    "suppress_tokens": (), "begin_suppress_tokens": (), "token_healing": (False,), "guidance_scale": (1.0, 1),
    "watermarking_config": (), "output_attentions": (False,), "output_hidden_states": (False,),
    "is_assistant": (False,), "prompt_lookup_num_tokens": (), "assistant_early_exit": (), "penalty_alpha": (0.0, 0),
    "dola_layers": (), "diversity_penalty": (0.0, 0), "num_beam_groups": (1,), "constraints": (),
    "force_words_ids": (), "low_memory": (False,), "cache_implementation": ("dynamic", "hybrid"),
    "continuous_batching_config": (), "prefill_chunk_size": (),
}
# generate() arguments of transformers that need machinery the built-in models do not have.
UNSUPPORTED_ARGUMENTS = ("prefix_allowed_tokens_fn", "assistant_model", "negative_prompt_ids",
                         "negative_prompt_attention_mask", "custom_generate", "synced_gpus")
ADVICE = "load with backend='transformers' for the full transformers generate()"


class GenerationMixin:
    """Adds `generate` to a model whose forward takes input_ids, attention_mask, position_ids,
    past_key_values, use_cache and logits_to_keep, and returns `.logits` and `.past_key_values`."""

    generation_config: GenerationConfig

    @torch.no_grad()
    def generate(self, inputs: Optional[torch.Tensor] = None, generation_config: Optional[GenerationConfig] = None,
                 logits_processor: Optional[Sequence[Any]] = None, stopping_criteria: Optional[Sequence[Any]] = None,
                 prefix_allowed_tokens_fn: Any = None, synced_gpus: Optional[bool] = None,
                 assistant_model: Any = None, streamer: Any = None, negative_prompt_ids: Optional[torch.Tensor] = None,
                 negative_prompt_attention_mask: Optional[torch.Tensor] = None,
                 use_model_defaults: Optional[bool] = None, custom_generate: Any = None,
                 **kwargs: Any) -> Union[torch.Tensor, Any]:
        """Continues each prompt row of `inputs` (or `input_ids=`; (batch, seq)), as transformers' generate does.

        Options are GenerationConfig fields, as keywords or in `generation_config`, over
        `model.generation_config`: lengths (max_new_tokens, max_length, min_length, min_new_tokens,
        max_time), greedy or beam search (num_beams, length_penalty, early_stopping,
        num_return_sequences), sampling (do_sample, temperature, top_k, top_p, min_p, typical_p;
        draws from `generator=` if given, else from torch's global generator as transformers does),
        repetition_penalty, no_repeat_ngram_size, bad_words_ids, sequence_bias, eos_token_id (int or
        list), pad_token_id, stop_strings (with `tokenizer=`), use_cache, renormalize_logits,
        return_dict_in_generate with output_scores / output_logits. `logits_processor` and
        `stopping_criteria` take lists of callables (transformers' classes too), `streamer` an object
        with put/end. Left-padded batches need `attention_mask` (inferred from pad_token_id when it
        differs from eos). Returns the sequences (prompt and new tokens), or a
        GenerateDecoderOnlyOutput / GenerateBeamDecoderOnlyOutput with return_dict_in_generate.
        Raises GenerationOptionError (ValueError) for unknown options or invalid values, and
        UnsupportedGenerationOptionError (NotImplementedError) naming a transformers option this
        implementation lacks.
        """
        arguments = dict(zip(UNSUPPORTED_ARGUMENTS, (prefix_allowed_tokens_fn, assistant_model, negative_prompt_ids,
                                                     negative_prompt_attention_mask, custom_generate, synced_gpus)))
        for name, value in arguments.items():
            if value:
                raise UnsupportedGenerationOptionError(f"generate({name}=...) is not implemented by warpload's "
                                                       f"built-in models; {ADVICE}")
        input_ids = inputs if inputs is not None else kwargs.pop("input_ids", None)
        if input_ids is None:
            raise GenerationOptionError("generate() needs the prompt token ids: pass `inputs` or `input_ids=` "
                                        "(a (batch, seq) tensor, e.g. tokenizer(text, return_tensors='pt').input_ids)")
        attention_mask = kwargs.pop("attention_mask", None)
        generator = kwargs.pop("generator", None)
        tokenizer = kwargs.pop("tokenizer", None)
        config, default_length = self.call_generation_config(generation_config, kwargs, use_model_defaults)
        return self.generate_with(input_ids, attention_mask, config, default_length, list(logits_processor or []),
                                  list(stopping_criteria or []), streamer, generator, tokenizer)

    def call_generation_config(self, generation_config: Optional[GenerationConfig], kwargs: dict[str, Any],
                               use_model_defaults: Optional[bool]) -> tuple[GenerationConfig, bool]:
        """The call's options over the model's generation config over transformers' defaults, and whether nobody
        set max_length; raises for options nobody knows and for unsupported ones the call sets (those only the
        model sets are warned about)."""
        has_default_max_length = (kwargs.get("max_length") is None
                                  and (generation_config is None or generation_config.max_length is None)
                                  and self.generation_config.max_length is None)
        config = copy.deepcopy(generation_config) if generation_config is not None else GenerationConfig()
        if use_model_defaults is not False:
            config.update(**self.generation_config.to_dict(), defaults_only=True, allow_custom_entries=True)
        config.update(**GENERATE_DEFAULTS, defaults_only=True)
        unknown = config.update(**kwargs)
        if unknown:
            raise GenerationOptionError(
                f"generate() got option(s) {sorted(unknown)} that are neither GenerationConfig fields nor inputs "
                "of warpload's built-in models (input_ids, attention_mask, generator, tokenizer)")
        asked = set(kwargs) | ({key for key, value in generation_config.to_dict().items() if value is not None}
                               if generation_config is not None else set())
        for field, neutral in UNSUPPORTED.items():
            value = getattr(config, field, None)
            if value is None or value in neutral:
                continue
            if field in asked:
                raise UnsupportedGenerationOptionError(
                    f"generate({field}={value!r}) is not implemented by warpload's built-in models; {ADVICE}")
            logger.warning("Ignoring %s=%r from the model's generation config: warpload's built-in generate does not "
                           "implement it (%s).", field, value, ADVICE)
        return config, has_default_max_length

    def generate_with(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor],
                      config: GenerationConfig, default_length: bool, logits_processor: list[Any],
                      stopping_criteria: list[Any], streamer: Any, generator: Optional[torch.Generator],
                      tokenizer: Any) -> Any:
        """generate() once the options are resolved: special tokens, expansion for beams, lengths, then decoding."""
        device = input_ids.device
        eos = token_list(config.eos_token_id)
        pad = config.pad_token_id
        if pad is None and eos:
            logger.warning("Setting `pad_token_id` to `eos_token_id`:%d for open-end generation.", eos[0])
            pad = eos[0]
        if attention_mask is None:
            attention_mask = inferred_mask(input_ids, pad, eos)
        attention_mask = attention_mask.to(device)
        num_beams = config.num_beams
        if num_beams > 1 and streamer is not None:
            raise GenerationOptionError("`streamer` cannot be used with beam search (yet!). Make sure that "
                                        "`num_beams` is set to 1.")
        if num_beams == 1 and config.num_return_sequences > 1 and not config.do_sample:
            raise GenerationOptionError(
                f"Greedy methods without beam search do not support `num_return_sequences` different than 1 (got "
                f"{config.num_return_sequences}); set num_beams >= num_return_sequences or do_sample=True")
        expand = max(num_beams, config.num_return_sequences)
        if expand > 1:
            input_ids = input_ids.repeat_interleave(expand, dim=0)
            attention_mask = attention_mask.repeat_interleave(expand, dim=0)
        if streamer is not None:
            streamer.put(input_ids.cpu())
        self.set_lengths(config, input_ids.shape[1], default_length)
        eos_tensor = torch.tensor(eos, device=device, dtype=torch.long)
        padding_lengths = (attention_mask != 0).int().argmax(dim=1)
        processors = build_processors(config, input_ids.shape[1], eos_tensor, padding_lengths, logits_processor)
        criteria = build_criteria(config, eos_tensor, tokenizer, stopping_criteria)
        if num_beams > 1:
            fill_value = (pad if pad else eos[0]) if eos else -1
            return beam_search(self, input_ids, attention_mask, config, processors, criteria, fill_value, len(eos),
                               generator)
        pads_finished = bool(eos) or any(hasattr(criterion, "eos_token_id") for criterion in stopping_criteria)
        return self.decode(input_ids, attention_mask, config, processors, criteria, pad if pads_finished else None,
                           streamer, generator)

    def set_lengths(self, config: GenerationConfig, prompt_length: int, default_length: bool) -> None:
        """max_length and min_length in tokens of the whole row, as transformers' _prepare_generated_length: by
        default 20 new tokens, capped at max_position_embeddings."""
        if config.max_new_tokens is not None:
            config.max_length = config.max_new_tokens + prompt_length
        elif default_length:
            config.max_length = config.max_length + prompt_length
            max_positions = getattr(self.config, "max_position_embeddings", None)
            if max_positions is not None:
                config.max_length = min(config.max_length, max_positions)
        if config.min_new_tokens is not None:
            config.min_length = config.min_new_tokens + prompt_length

    def decode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, config: GenerationConfig,
               processors: Any, criteria: Any, pad: Optional[int], streamer: Any,
               generator: Optional[torch.Generator]) -> Any:
        """Greedy or sampled decoding, one forward per step over the whole batch (transformers' _sample)."""
        # Positions count real tokens only, so left padding does not shift a row (transformers' rule).
        position_ids = (attention_mask.long().cumsum(-1) - 1).masked_fill(attention_mask == 0, 0)
        cache = KVCache() if config.use_cache else None
        unfinished = torch.ones(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        scores: Optional[list[torch.Tensor]] = [] if config.return_dict_in_generate and config.output_scores else None
        raw_logits: Optional[list[torch.Tensor]] = [] if config.return_dict_in_generate and config.output_logits \
            else None
        tokens, step_ids, step_positions = input_ids, input_ids, position_ids
        while True:
            output = self(step_ids, attention_mask=attention_mask, position_ids=step_positions,
                          past_key_values=cache, use_cache=config.use_cache, logits_to_keep=1)
            logits = output.logits[:, -1, :].to(dtype=torch.float32, copy=True)
            del output
            next_scores = processors(tokens, logits)
            if scores is not None:
                scores.append(next_scores)
            if raw_logits is not None:
                raw_logits.append(logits)
            if config.do_sample:
                next_tokens = torch.multinomial(torch.softmax(next_scores, dim=-1), num_samples=1,
                                                generator=generator).squeeze(1)
            else:
                next_tokens = torch.argmax(next_scores, dim=-1)
            if pad is not None:
                next_tokens = torch.where(unfinished, next_tokens, torch.full_like(next_tokens, pad))
            tokens = torch.cat([tokens, next_tokens[:, None]], dim=-1)
            attention_mask = torch.cat([attention_mask, attention_mask.new_ones((attention_mask.shape[0], 1))], dim=-1)
            position_ids = torch.cat([position_ids, position_ids[:, -1:] + 1], dim=-1)
            unfinished &= ~criteria(tokens, tuple(scores) if scores is not None else None)
            if streamer is not None:
                streamer.put(next_tokens.cpu())
            if not bool(unfinished.any()):
                break
            if cache is not None:
                step_ids, step_positions = next_tokens[:, None], position_ids[:, -1:]
            else:
                step_ids, step_positions = tokens, position_ids
        if streamer is not None:
            streamer.end()
        if not config.return_dict_in_generate:
            return tokens
        return GenerateDecoderOnlyOutput(sequences=tokens, scores=tuple(scores) if scores is not None else None,
                                         logits=tuple(raw_logits) if raw_logits is not None else None, cache=cache)


def token_list(token_ids: Union[None, int, Sequence[int], torch.Tensor]) -> list[int]:
    """eos_token_id as a list of ints (transformers takes an int, a list or a tensor)."""
    if token_ids is None:
        return []
    if isinstance(token_ids, torch.Tensor):
        return [int(t) for t in token_ids.reshape(-1).tolist()]
    return [int(token_ids)] if isinstance(token_ids, int) else [int(t) for t in token_ids]


def inferred_mask(input_ids: torch.Tensor, pad: Optional[int], eos: list[int]) -> torch.Tensor:
    """All ones, unless the prompts hold pad tokens that cannot be end-of-sequence tokens."""
    if pad is not None and pad not in eos and bool((input_ids == pad).any()):
        return input_ids.ne(pad).long()
    return torch.ones_like(input_ids, dtype=torch.long)
