"""The tokenizer classes transformers 5 would pick for a folder, where the choice changes the outputs.

transformers' AutoTokenizer builds most repos' tokenizers straight from tokenizer.json (TokenizersBackend),
and so does warpload. A class named in tokenizer_config.json whose __init__ rebuilds the pipeline changes
the tokens: LlamaTokenizer (Llama 1 and 2, and the many repos that copied their tokenizer) keeps only the
vocabulary and merges of tokenizer.json and replaces its normalizer, pre-tokenizer and decoder with a
Metaspace pipeline. `choose_pipeline` applies AutoTokenizer's rules (transformers 5.24,
models/auto/tokenization_auto.py) for that class; other classes are read from tokenizer.json as they are.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any, Optional

logger = logging.getLogger(__name__)

# The other TokenizersBackend subclasses of transformers 5.24 whose __init__ rebuilds the pipeline: warpload reads
# tokenizer.json as it is for them, which gives transformers' tokens when the file holds the pipeline the class
# builds (checked for GPT2Tokenizer on a GPT-2-style file); a load says so in an INFO log line.
NOT_REBUILT = frozenset((
    "AlbertTokenizer", "BarthezTokenizer", "BertTokenizer", "BigBirdTokenizer", "BlenderbotTokenizer",
    "CLIPTokenizer", "CamembertTokenizer", "CodeLlamaTokenizer", "CohereTokenizer", "DPRQuestionEncoderTokenizer",
    "DebertaTokenizer", "DebertaV2Tokenizer", "EsmcTokenizer", "FunnelTokenizer", "GPT2Tokenizer",
    "GPTNeoXTokenizer", "GemmaTokenizer", "HerbertTokenizer", "LasrTokenizer", "LayoutLMv2Tokenizer",
    "LayoutLMv3Tokenizer", "LayoutXLMTokenizer", "LukeTokenizer", "MBart50Tokenizer", "MBartTokenizer",
    "MPNetTokenizer", "MarkupLMTokenizer", "NllbTokenizer", "NougatTokenizer", "OpenAIGPTTokenizer",
    "PegasusTokenizer", "Qwen3_5Tokenizer", "ReformerTokenizer", "RemBertTokenizer", "RoFormerTokenizer",
    "RobertaTokenizer", "SeamlessM4TTokenizer", "Siglip2Tokenizer", "SplinterTokenizer", "T5Tokenizer",
    "UdopTokenizer", "VideoPrismTokenizer", "WhisperTokenizer", "XGLMTokenizer", "XLMRobertaTokenizer",
    "XLNetTokenizer"))

# transformers 5.24's models/auto/tokenization_auto.py, the part of it that decides between rebuilt and as-is:
# model types it maps to a generic backend (TokenizersBackend; MistralCommonBackend needs mistral_common) ...
GENERIC_MODEL_TYPES = frozenset((
    "EvollaModel", "aria", "beam", "bigbird_pegasus", "canary", "flex_olmo", "glm", "glm4", "glm4_moe",
    "glm4_moe_lite", "glm4v", "glm4v_moe", "glm_image", "glmasr", "got_ocr2", "gpt_bigcode", "gradium_phonon_tts",
    "granite", "granitemoe", "granitemoehybrid", "granitemoeshared", "kimi_k25", "kimi_linear", "kosmos-2",
    "mimo_v2_flash", "minicpm_ocr", "minicpmv4_6", "minicpmv4_7", "ministral", "ministral3", "mistral", "mistral3",
    "mistral_large4", "mixtral", "nemo_speechlm", "nystromformer", "olmo2", "olmo3", "olmo_hybrid", "omniasr",
    "pegasus_x", "persimmon", "pix2struct", "pixtral", "pocket_tts", "stablelm", "umt5", "voxtral",
    "voxtral_realtime", "xlm-roberta-xl"))
# ... MODELS_WITH_INCORRECT_HUB_TOKENIZER_CLASS, whose registered class wins over tokenizer_config.json's ...
REGISTERED_OVER_HUB = {"qwen2": "Qwen2Tokenizer", "hyperclovax_vision_v2": "GPT2Tokenizer",
                       "qwen3_5": "Qwen3_5Tokenizer", "qwen3_5_moe": "Qwen3_5Tokenizer",
                       "qwen3_5_moe_text": "Qwen3_5Tokenizer", "qwen4_exp": "Qwen3_5Tokenizer",
                       "siglip2": "Siglip2Tokenizer", **dict.fromkeys((
                           "arctic", "camembertv2-base", "chatlm", "cohere_asr", "ernie4_5", "ernie4_5_moe", "fuyu",
                           "h2ovl_chat", "hyperclovax", "hyperclovax_vlm", "internlm2", "internlm3", "iquestcoder",
                           "jamba", "llava", "llava_next", "minicpm3", "minicpmv", "minimax_m2", "modernbert",
                           "modernbert-decoder", "molmo", "molmo2", "nemotron", "nvfp4", "opencua", "openvla",
                           "paddleocr_vl", "phi3", "phi3_v", "phimoe", "smolvlm", "step3_vl", "vipllava"),
                           "TokenizersBackend")}
# ... and the model types registered with a class warpload rebuilds (used when no class is declared).
REGISTERED_REBUILT = {**dict.fromkeys(("idefics", "idefics2"), "LlamaTokenizer"), **dict.fromkeys((
    "audioflamingo3", "colqwen2", "cosmos3_omni", "dots3_note", "fun_asr_nano", "hunyuan_vl", "internvl",
    "lighton_ocr", "moss_transcribe_diarize", "ovis2", "qianfan_ocr", "qwen2_5_omni", "qwen2_5_vl", "qwen2_audio",
    "qwen2_moe", "qwen2_vl", "qwen3", "qwen3_asr", "qwen3_moe", "qwen3_next", "qwen3_omni_moe", "qwen3_vl",
    "qwen3_vl_moe", "vibevoice"), "Qwen2Tokenizer")}


def transformers_class(declared: str, model_type: Optional[str], byte_level: bool) -> str:
    """The tokenizer class transformers 5.24's AutoTokenizer builds for a repo without `auto_map`: `declared` is
    tokenizer_config.json's tokenizer_class (else config.json's), `model_type` config.json's, byte_level whether
    tokenizer.json is byte-level."""
    declared = declared.removesuffix("Fast")
    if declared == "LlamaTokenizer" and model_type not in REGISTERED_OVER_HUB and byte_level:
        return "TokenizersBackend"  # a Llama 3 style file under Llama 2's class name: loaded as it is
    if model_type in GENERIC_MODEL_TYPES:
        return "TokenizersBackend"
    if model_type in REGISTERED_OVER_HUB:
        return REGISTERED_OVER_HUB[model_type]
    if declared:
        return declared
    return REGISTERED_REBUILT.get(model_type or "", "TokenizersBackend")


@dataclass
class Pipeline:
    """The backend to build the tokenizer on, the class transformers would use, and that class's defaults
    (keywords the config and the caller override)."""

    backend: Any
    class_name: str = "TokenizersBackend"
    defaults: dict[str, Any] = field(default_factory=dict)


def choose_pipeline(backend: Any, tokenizer_file: str, tokenizer_config: dict[str, Any],
                    model_config: Optional[dict[str, Any]], kwargs: dict[str, Any]) -> Pipeline:
    """The Pipeline for a tokenizer.json already loaded as `backend` (tokenizers.Tokenizer).

    `tokenizer_config` is tokenizer_config.json, `model_config` config.json (None when absent), `kwargs` the
    merged keywords (legacy, add_prefix_space). Rebuilds LlamaTokenizer's or Qwen2Tokenizer's pipeline on the
    file's BPE vocabulary when transformers_class names one of them; any other class keeps the file's pipeline.
    A repo with `auto_map` (remote code, never run here) keeps the file's pipeline too."""
    declared = tokenizer_config.get("tokenizer_class") or (model_config or {}).get("tokenizer_class") or ""
    model_type = (model_config or {}).get("model_type")
    if "auto_map" in tokenizer_config:
        return Pipeline(backend)
    class_name = transformers_class(declared, model_type, byte_level=False)
    if class_name in NOT_REBUILT:
        logger.info("%s: transformers rebuilds %s's pipeline from the vocabulary; warpload uses the file as it is",
                    tokenizer_file, class_name)
    if class_name not in REBUILDERS:
        return Pipeline(backend)
    # Only now is the file read again: whether it is byte-level, and its vocabulary and merges.
    with open(tokenizer_file, encoding="utf-8") as handle:
        text = handle.read()
    class_name = transformers_class(declared, model_type, byte_level='"ByteLevel"' in text)
    serialized = json.loads(text)
    if class_name not in REBUILDERS or serialized.get("model", {}).get("type") != "BPE":
        return Pipeline(backend)
    rebuild, defaults = REBUILDERS[class_name]
    return Pipeline(rebuild(backend, serialized["model"], kwargs), class_name, dict(defaults))


def _bpe_vocabulary(model: dict[str, Any]) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """tokenizer.json's BPE vocabulary and merges, as transformers' convert_to_native_format extracts them."""
    vocab = model["vocab"]
    if isinstance(vocab, list):
        vocab = {entry[0] if isinstance(entry, list) else entry: index for index, entry in enumerate(vocab)}
    merges = [tuple(merge.split(" ")) if isinstance(merge, str) else tuple(merge) for merge in model.get("merges", [])]
    return vocab, merges


def _keep_file_settings(backend: Any, file_backend: Any) -> Any:
    """The file's post-processor, padding and truncation on a rebuilt backend, as transformers passes them."""
    if file_backend.post_processor is not None:
        backend.post_processor = file_backend.post_processor
    if file_backend.truncation is not None:
        backend.enable_truncation(**file_backend.truncation)
    if file_backend.padding is not None:
        backend.enable_padding(**file_backend.padding)
    return backend


def llama_backend(file_backend: Any, model: dict[str, Any], kwargs: dict[str, Any]) -> Any:
    """transformers 5's LlamaTokenizer pipeline on tokenizer.json's vocabulary and merges: byte-fallback BPE, no
    normalizer, a Metaspace pre-tokenizer (prefix "first" unless `legacy`, none with add_prefix_space=False), the
    file's post-processor, padding and truncation. Its added tokens are added back by the tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    vocab, merges = _bpe_vocabulary(model)
    backend = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=True, byte_fallback=True, dropout=None))
    add_prefix_space = kwargs.get("add_prefix_space")
    add_prefix_space = True if add_prefix_space is None else add_prefix_space
    scheme = ("always" if kwargs.get("legacy", False) else "first") if add_prefix_space else "never"
    backend.normalizer = None
    backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme=scheme, split=False)
    steps = [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()]
    if add_prefix_space:
        steps.append(decoders.Strip(content=" ", left=1))
    backend.decoder = decoders.Sequence(steps)
    return _keep_file_settings(backend, file_backend)


# Qwen2Tokenizer's pre-tokenizer split (models/qwen2/tokenization_qwen2.py).
QWEN2_SPLIT = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|"""
               r"""\s+(?!\S)|\s+""")


def qwen2_backend(file_backend: Any, model: dict[str, Any], kwargs: dict[str, Any]) -> Any:
    """transformers 5's Qwen2Tokenizer pipeline on tokenizer.json's vocabulary and merges: byte-level BPE, NFC, its
    regex split then ByteLevel (prefix space only with add_prefix_space=True), the file's post-processor."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers

    vocab, merges = _bpe_vocabulary(model)
    backend = Tokenizer(models.BPE(vocab=vocab, merges=merges, dropout=None, unk_token=None,
                                   continuing_subword_prefix="", end_of_word_suffix="", fuse_unk=False,
                                   byte_fallback=False))
    backend.decoder = decoders.ByteLevel()
    backend.normalizer = normalizers.NFC()
    backend.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=bool(kwargs.get("add_prefix_space")), use_regex=False)])
    return _keep_file_settings(backend, file_backend)


# The classes whose __init__ rebuilds the pipeline, with the keyword defaults their __init__ (or class) sets.
REBUILDERS = {
    "LlamaTokenizer": (llama_backend, {"padding_side": "left", "unk_token": "<unk>", "bos_token": "<s>",
                                       "eos_token": "</s>"}),
    "Qwen2Tokenizer": (qwen2_backend, {"unk_token": "<|endoftext|>", "eos_token": "<|endoftext|>",
                                       "pad_token": "<|endoftext|>"}),
}
