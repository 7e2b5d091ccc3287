"""Small tokenizers trained in the test session with the `tokenizers` package and saved by transformers'
PreTrainedTokenizerFast.save_pretrained: a GPT-2-style byte-level BPE and a Llama-style metaspace BPE with a
BOS-adding post-processor, each with special tokens, an added token and a chat template."""
from __future__ import annotations

from pathlib import Path

CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Hello, world! How are you doing today?",
    "warpload loads checkpoints as fast as the hardware allows.",
    "Tokenizers split text into tokens; models read their ids.",
    "I can't believe it's not butter, isn't it?",
    "Numbers like 12345 and 3.14159 appear too.",
] * 20

CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if message['role'] == 'system' %}<<SYS>>{{ message['content'] | trim }}<</SYS>>\n"
    "{% else %}<|{{ message['role'] }}|>\n{{ message['content'] }}{{ eos_token }}\n{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}")
# A template with transformers' extras: the generation tag, namespace, tojson and loop controls.
TOOL_TEMPLATE = (
    "{% set ns = namespace(count=0) %}{% for message in messages %}{% set ns.count = ns.count + 1 %}"
    "{% if message['role'] == 'skip' %}{% continue %}{% endif %}"
    "{% if message['role'] == 'assistant' %}{% generation %}{{ message['content'] }}{{ eos_token }}{% endgeneration %}"
    "{% else %}[{{ message['role'] }}] {{ message['content'] }}\n{% endif %}{% endfor %}"
    "{% if tools %}tools: {{ tools | tojson }}{% endif %}count={{ ns.count }}")


def train_gpt2_style():
    """Byte-level BPE like GPT-2: one <|endoftext|> token for BOS, EOS and UNK, no post-processor template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    backend.train_from_iterator(CORPUS, trainer)
    return backend


def train_llama_style():
    """Metaspace BPE with byte fallback like Llama 2: <unk>, <s>, </s>, a post-processor that adds <s>."""
    from tokenizers import Tokenizer, decoders, models, normalizers, trainers

    backend = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    backend.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    backend.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                         decoders.Strip(" ", 1, 0)])
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<unk>", "<s>", "</s>"],
                                  initial_alphabet=[f"<0x{byte:02X}>" for byte in range(256)], show_progress=False)
    backend.train_from_iterator(CORPUS, trainer)
    return backend


def save_tokenizer(kind: str, folder: Path, *, chat_template_in_config: bool = False, pad: bool = True) -> Path:
    """Trains the `kind` ("gpt2" or "llama") tokenizer and saves it with transformers into folder.

    transformers 5 writes the template to chat_template.jinja; chat_template_in_config moves it into
    tokenizer_config.json, as older repos have it. pad=False leaves the tokenizer without a pad token."""
    import json

    from transformers import PreTrainedTokenizerFast

    if kind == "gpt2":
        tokenizer = PreTrainedTokenizerFast(tokenizer_object=train_gpt2_style(), bos_token="<|endoftext|>",
                                            eos_token="<|endoftext|>", unk_token="<|endoftext|>",
                                            pad_token="<|endoftext|>" if pad else None, model_max_length=1024)
    else:
        tokenizer = PreTrainedTokenizerFast(tokenizer_object=train_llama_style(), bos_token="<s>", eos_token="</s>",
                                            unk_token="<unk>", pad_token="<pad>" if pad else None,
                                            add_bos_token=True, model_max_length=64, padding_side="left",
                                            additional_special_tokens=["<|user|>", "<|assistant|>"])
    tokenizer.add_tokens(["warpload"])
    tokenizer.chat_template = {"default": CHAT_TEMPLATE, "tool_use": TOOL_TEMPLATE} if kind == "llama" \
        else CHAT_TEMPLATE
    tokenizer.save_pretrained(folder)
    if chat_template_in_config:
        config_path = folder / "tokenizer_config.json"
        config = json.loads(config_path.read_text())
        config["chat_template"] = (folder / "chat_template.jinja").read_text()
        config_path.write_text(json.dumps(config))
        (folder / "chat_template.jinja").unlink()
    return folder
