"""warpload.AutoTokenizer against transformers' AutoTokenizer on the same files: tokenizers trained here
(tests/tokenizer_files.py) and saved by transformers; encodings, padding, truncation, decodings, special
tokens, chat renderings and save_pretrained round trips must be equal."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
import transformers

from tokenizer_files import CHAT_TEMPLATE, save_tokenizer
from warpload import errors
from warpload.tokenization.auto import AutoTokenizer

TEXTS = ["Hello, world! warpload loads", "The quick brown fox <s> jumps </s> over", "é ü 日本 🙂 12345",
         " leading space", ""]
CHAT = [{"role": "system", "content": "Be brief. "}, {"role": "user", "content": "Hi <s> there"},
        {"role": "assistant", "content": "Hello!", "tool_calls": None}, {"role": "user", "content": "Again?"}]
KINDS = ["gpt2", "llama"]


@pytest.fixture(scope="module", name="folders")
def folders_fixture(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("tokenizers")
    folders = {kind: save_tokenizer(kind, root / kind) for kind in KINDS}
    folders["gpt2-config-template"] = save_tokenizer("gpt2", root / "config-template", chat_template_in_config=True)
    folders["gpt2-no-pad"] = save_tokenizer("gpt2", root / "no-pad", pad=False)
    return folders


def both(folder, **kwargs):
    return transformers.AutoTokenizer.from_pretrained(folder, **kwargs), AutoTokenizer.from_pretrained(folder, **kwargs)


def as_lists(encoding) -> dict:
    """Values as lists, tagged with their type (tensor dtype, array dtype) so a wrong return type fails."""
    return {key: (type(value).__name__, str(getattr(value, "dtype", "")), value.tolist() if hasattr(value, "tolist")
                  else value) for key, value in encoding.items()}


CALLS = [
    {}, {"add_special_tokens": False}, {"padding": True}, {"padding": "longest"},
    {"padding": "max_length", "max_length": 24}, {"truncation": True, "max_length": 4},
    {"max_length": 3}, {"padding": True, "truncation": True, "max_length": 5, "padding_side": "left"},
    {"padding": True, "padding_side": "right", "return_attention_mask": False},
    {"padding": True, "pad_to_multiple_of": 8}, {"return_token_type_ids": True, "return_special_tokens_mask": True,
                                                 "return_offsets_mapping": True, "return_length": True},
    {"truncation": True, "max_length": 4, "stride": 1, "return_overflowing_tokens": True},
    {"padding": True, "return_tensors": "pt"}, {"padding": True, "return_tensors": "np"},
]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("call", CALLS, ids=lambda call: ",".join(f"{k}={v}" for k, v in call.items()) or "plain")
def test_batch_encodings_equal_transformers(folders, kind, call):
    reference, ours = both(folders[kind])
    expected, got = reference(TEXTS, **call), ours(TEXTS, **call)
    assert list(got) == list(expected)
    assert as_lists(got) == as_lists(expected)
    if call.get("return_tensors") == "pt":
        assert got["input_ids"].dtype == expected["input_ids"].dtype == torch.int64


@pytest.mark.parametrize("kind", KINDS)
def test_single_texts_pairs_and_encode_equal_transformers(folders, kind):
    reference, ours = both(folders[kind])
    for text in TEXTS:
        assert dict(ours(text)) == dict(reference(text))
        assert ours.encode(text) == reference.encode(text)
        assert ours.tokenize(text) == reference.tokenize(text)
        assert as_lists(ours(text, return_tensors="pt")) == as_lists(reference(text, return_tensors="pt"))
    assert dict(ours("a question?", "an answer.")) == dict(reference("a question?", "an answer."))
    pairs = (TEXTS[:3], TEXTS[1:4])
    assert dict(ours(*pairs, padding=True, truncation="longest_first", max_length=12)) == dict(
        reference(*pairs, padding=True, truncation="longest_first", max_length=12))
    words = [["Hello", "world"], ["split", "into", "words"]]
    assert dict(ours(words, is_split_into_words=True)) == dict(reference(words, is_split_into_words=True))


@pytest.mark.parametrize("kind", KINDS)
def test_decodings_equal_transformers(folders, kind):
    reference, ours = both(folders[kind])
    batch = reference(TEXTS, padding=True)["input_ids"]
    for skip in (False, True):
        for clean in (None, True, False):
            options = dict(skip_special_tokens=skip, clean_up_tokenization_spaces=clean)
            assert [ours.decode(ids, **options) for ids in batch] == [reference.decode(ids, **options)
                                                                      for ids in batch]
            assert ours.batch_decode(batch, **options) == reference.batch_decode(batch, **options)
    tensor = torch.tensor(batch)
    assert ours.batch_decode(tensor) == reference.batch_decode(tensor)
    assert ours.decode(tensor[0]) == reference.decode(tensor[0])
    assert ours.decode(batch[0][0]) == reference.decode(batch[0][0])
    assert ours.batch_decode([]) == reference.batch_decode([]) == []


@pytest.mark.parametrize("kind", KINDS)
def test_vocabulary_and_special_tokens_equal_transformers(folders, kind):
    reference, ours = both(folders[kind])
    for name in ("bos_token", "eos_token", "unk_token", "pad_token", "sep_token", "cls_token", "mask_token",
                 "bos_token_id", "eos_token_id", "unk_token_id", "pad_token_id", "sep_token_id",
                 "all_special_tokens", "all_special_ids", "special_tokens_map", "extra_special_tokens",
                 "extra_special_tokens_ids", "vocab_size", "model_max_length", "padding_side", "truncation_side",
                 "added_tokens_encoder", "chat_template", "add_bos_token", "add_eos_token", "is_fast"):
        assert getattr(ours, name) == getattr(reference, name), name
    assert len(ours) == len(reference)
    assert ours.get_vocab() == reference.get_vocab()
    assert {index: str(token) for index, token in ours.added_tokens_decoder.items()} == {
        index: str(token) for index, token in reference.added_tokens_decoder.items()}
    tokens = ["<s>", "</s>", "warpload", "Hello", "not-a-token-at-all", "<|endoftext|>"]
    assert ours.convert_tokens_to_ids(tokens) == reference.convert_tokens_to_ids(tokens)
    assert ours.convert_tokens_to_ids("warpload") == reference.convert_tokens_to_ids("warpload")
    ids = list(range(len(reference))) + [len(reference) + 5]
    assert ours.convert_ids_to_tokens(ids) == reference.convert_ids_to_tokens(ids)
    assert ours.convert_ids_to_tokens(ids, skip_special_tokens=True) == reference.convert_ids_to_tokens(
        ids, skip_special_tokens=True)
    assert ours.convert_ids_to_tokens(3) == reference.convert_ids_to_tokens(3)
    assert ours.convert_tokens_to_string(ours.convert_ids_to_tokens(ids[:40])) == \
        reference.convert_tokens_to_string(reference.convert_ids_to_tokens(ids[:40]))


def test_llama_style_adds_bos_from_the_saved_post_processor(folders):
    reference, ours = both(folders["llama"])
    ids = ours("Hello")["input_ids"]
    assert ids[0] == ours.bos_token_id == reference.bos_token_id and ids == reference("Hello")["input_ids"]
    assert ours.add_bos_token is reference.add_bos_token is False  # transformers 5 drops the config's flag


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("flags", [{"add_bos_token": True}, {"add_eos_token": True},
                                   {"add_bos_token": True, "add_eos_token": True}, {"add_bos_token": False}])
def test_add_bos_and_eos_options_equal_transformers(folders, kind, flags):
    reference, ours = both(folders[kind], **flags)
    assert dict(ours(TEXTS[:3], padding=True)) == dict(reference(TEXTS[:3], padding=True))
    assert dict(ours("one", "two")) == dict(reference("one", "two"))
    assert (ours.add_bos_token, ours.add_eos_token) == (reference.add_bos_token, reference.add_eos_token)
    ours.add_eos_token = reference.add_eos_token = not reference.add_eos_token
    assert ours("again")["input_ids"] == reference("again")["input_ids"]


def test_options_override_the_config_as_in_transformers(folders):
    options = dict(padding_side="right", model_max_length=8, pad_token="<|user|>", eos_token="<|assistant|>")
    reference, ours = both(folders["llama"], **options)
    assert dict(ours(TEXTS, padding=True, truncation=True)) == dict(reference(TEXTS, padding=True, truncation=True))
    assert (ours.pad_token_id, ours.eos_token, ours.model_max_length) == (
        reference.pad_token_id, reference.eos_token, reference.model_max_length)


def test_pad_token_none_refuses_padding_then_eos_as_pad_works(folders):
    reference, ours = both(folders["gpt2-no-pad"])
    assert ours.pad_token is None and ours.pad_token_id is None and reference.pad_token is None
    with pytest.raises(ValueError, match="Asking to pad but the tokenizer does not have a padding token"):
        ours(TEXTS, padding=True)
    with pytest.raises(ValueError, match="Asking to pad"):
        reference(TEXTS, padding=True)
    assert dict(ours(TEXTS)) == dict(reference(TEXTS))
    ours.pad_token = ours.eos_token
    reference.pad_token = reference.eos_token
    assert ours.pad_token_id == reference.pad_token_id
    assert dict(ours(TEXTS, padding=True)) == dict(reference(TEXTS, padding=True))
    with pytest.raises(ValueError, match="Unable to create tensor"):
        AutoTokenizer.from_pretrained(folders["gpt2-no-pad"])(TEXTS, return_tensors="pt")


@pytest.mark.parametrize("folder", ["gpt2", "llama", "gpt2-config-template"])
@pytest.mark.parametrize("generation_prompt", [False, True])
def test_chat_renderings_equal_transformers(folders, folder, generation_prompt):
    reference, ours = both(folders[folder])
    options = dict(add_generation_prompt=generation_prompt)
    text = ours.apply_chat_template(CHAT, tokenize=False, **options)
    assert text == reference.apply_chat_template(CHAT, tokenize=False, **options)
    assert text.startswith(ours.bos_token) and ("<|assistant|>" in text.splitlines()[-1]) is generation_prompt
    batch = [CHAT, CHAT[1:2]]
    assert ours.apply_chat_template(batch, tokenize=False, **options) == reference.apply_chat_template(
        batch, tokenize=False, **options)
    assert as_lists(ours.apply_chat_template(CHAT, **options)) == as_lists(
        reference.apply_chat_template(CHAT, **options))
    assert ours.apply_chat_template(CHAT, return_dict=False, **options) == reference.apply_chat_template(
        CHAT, return_dict=False, **options)
    assert as_lists(ours.apply_chat_template(batch, padding=True, return_tensors="pt", **options)) == as_lists(
        reference.apply_chat_template(batch, padding=True, return_tensors="pt", **options))
    assert ours.apply_chat_template(CHAT[:3], continue_final_message=True, tokenize=False) == \
        reference.apply_chat_template(CHAT[:3], continue_final_message=True, tokenize=False)


def test_named_chat_templates_tools_and_generation_masks_equal_transformers(folders):
    reference, ours = both(folders["llama"])
    assert sorted(ours.chat_template) == sorted(reference.chat_template) == ["default", "tool_use"]
    tools = [{"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}}]
    chat = [*CHAT, {"role": "skip", "content": "hidden"}, {"role": "assistant", "content": "Bye"}]
    for options in ({"tools": tools}, {"chat_template": "tool_use"}, {"chat_template": "{{ messages | length }}"}):
        assert ours.apply_chat_template(chat, tokenize=False, **options) == reference.apply_chat_template(
            chat, tokenize=False, **options)
    masked = dict(chat_template="tool_use", return_assistant_tokens_mask=True)
    got, expected = ours.apply_chat_template(chat, **masked), reference.apply_chat_template(chat, **masked)
    assert as_lists(got) == as_lists(expected) and 1 in got["assistant_masks"]
    with pytest.raises(ValueError, match="continue_final_message and add_generation_prompt are not compatible"):
        ours.apply_chat_template(CHAT, continue_final_message=True, add_generation_prompt=True)


def test_chat_template_sandbox_refuses_python_internals(folders):
    ours = AutoTokenizer.from_pretrained(folders["gpt2"])
    import jinja2

    with pytest.raises(jinja2.exceptions.SecurityError):
        ours.apply_chat_template(CHAT, chat_template="{{ messages.__class__.__mro__ }}", tokenize=False)
    with pytest.raises(jinja2.exceptions.TemplateError, match="no system"):
        ours.apply_chat_template(CHAT, chat_template="{{ raise_exception('no system') }}", tokenize=False)


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
def test_save_pretrained_loads_back_equal_in_transformers(folders, kind, tmp_path):
    ours = AutoTokenizer.from_pretrained(folders[kind])
    ours.pad_token = ours.unk_token  # a changed special token must be saved too
    saved = ours.save_pretrained(tmp_path / "saved")
    assert {os.path.basename(path) for path in saved} >= {"tokenizer_config.json", "tokenizer.json",
                                                          "chat_template.jinja"}
    original = transformers.AutoTokenizer.from_pretrained(folders[kind])
    original.pad_token = original.unk_token
    reloaded = transformers.AutoTokenizer.from_pretrained(tmp_path / "saved")
    ours_again = AutoTokenizer.from_pretrained(tmp_path / "saved")
    for tokenizer in (reloaded, ours_again):
        assert dict(tokenizer(TEXTS, padding=True)) == dict(original(TEXTS, padding=True))
        assert tokenizer.special_tokens_map == original.special_tokens_map
        assert tokenizer.chat_template == original.chat_template
        assert tokenizer.apply_chat_template(CHAT, tokenize=False) == original.apply_chat_template(CHAT,
                                                                                                   tokenize=False)
    original.save_pretrained(tmp_path / "by-transformers")
    assert json.loads((tmp_path / "saved" / "tokenizer_config.json").read_text()) == json.loads(
        (tmp_path / "by-transformers" / "tokenizer_config.json").read_text())


def test_legacy_special_tokens_map_and_config_tokens(folders, tmp_path):
    """Older repos: special tokens as AddedToken dicts in special_tokens_map.json and none in the config."""
    folder = tmp_path / "legacy"
    folder.mkdir()
    (folder / "tokenizer.json").write_bytes((folders["llama"] / "tokenizer.json").read_bytes())
    (folder / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 32, "chat_template": CHAT_TEMPLATE,
                                                              "add_bos_token": True, "legacy": False}))
    token = {"content": "</s>", "lstrip": False, "normalized": False, "rstrip": False, "single_word": False}
    (folder / "special_tokens_map.json").write_text(json.dumps({"bos_token": "<s>", "eos_token": token,
                                                                "additional_special_tokens": ["<|user|>"]}))
    reference, ours = both(folder)
    assert ours.special_tokens_map == reference.special_tokens_map
    assert ours.all_special_ids == reference.all_special_ids
    assert dict(ours(TEXTS)) == dict(reference(TEXTS))
    assert ours.apply_chat_template(CHAT, tokenize=False) == reference.apply_chat_template(CHAT, tokenize=False)


def test_folder_without_tokenizer_files_names_what_it_looked_for(folders, tmp_path):
    with pytest.raises(errors.CheckpointNotFoundError, match="no tokenizer files"):
        AutoTokenizer.from_pretrained(tmp_path)
    with pytest.raises(errors.CheckpointNotFoundError, match="is a file: pass the folder"):
        AutoTokenizer.from_pretrained(folders["gpt2"] / "tokenizer.json")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "tokenizer.json").write_bytes((folders["gpt2"] / "tokenizer.json").read_bytes())
    (broken / "tokenizer_config.json").write_text("{not json")
    with pytest.raises(errors.CheckpointError, match="tokenizer_config.json is not valid JSON"):
        AutoTokenizer.from_pretrained(broken)


def test_batch_encoding_moves_and_unpacks_like_transformers(folders):
    reference, ours = both(folders["llama"])
    got, expected = ours(TEXTS, padding=True, return_tensors="pt"), reference(TEXTS, padding=True, return_tensors="pt")
    assert got.to("cpu") is got and got.input_ids is got["input_ids"]
    assert sorted(dict(**got)) == sorted(dict(**expected))
    assert got.tokens(1) == expected.tokens(1) and got.word_ids(0) == expected.word_ids(0)
    assert got[1].ids == expected[1].ids


def test_slow_only_folder_is_loaded_by_transformers(folders, tmp_path):
    """vocab.json + merges.txt only: transformers converts them, warpload hands the folder over (with a log line)."""
    backend = json.loads((folders["gpt2"] / "tokenizer.json").read_text())
    (tmp_path / "vocab.json").write_text(json.dumps(backend["model"]["vocab"]))
    merges = ["#version: 0.2"] + [" ".join(merge) if isinstance(merge, list) else merge
                                  for merge in backend["model"]["merges"]]
    (tmp_path / "merges.txt").write_text("\n".join(merges) + "\n")
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "GPT2Tokenizer"}))
    tokenizer = AutoTokenizer.from_pretrained(tmp_path)
    assert type(tokenizer).__module__.startswith("transformers.")
    assert tokenizer("Hello world")["input_ids"] == transformers.AutoTokenizer.from_pretrained(tmp_path)(
        "Hello world")["input_ids"]


NO_TRANSFORMERS = textwrap.dedent("""
    import builtins, json, sys
    real_import = builtins.__import__
    def guarded(name, *args, **kwargs):
        if name.split(".")[0] == "transformers":
            raise ImportError("transformers is not installed (test)")
        return real_import(name, *args, **kwargs)
    builtins.__import__ = guarded
    import warpload
    folder, slow = sys.argv[1], sys.argv[2]
    tokenizer = warpload.AutoTokenizer.from_pretrained(folder)
    tokenizer(["Hello, world!", "Hi"], padding=True)
    light = sorted(name for name in ("torch", "numpy", "huggingface_hub", "jinja2") if name in sys.modules)
    batch = tokenizer(["Hello, world!", "Hi"], padding=True, return_tensors="pt")
    text = tokenizer.apply_chat_template([{"role": "user", "content": "Hi"}], tokenize=False,
                                         add_generation_prompt=True)
    decoded = tokenizer.batch_decode(batch["input_ids"], skip_special_tokens=True)
    saved = tokenizer.save_pretrained(sys.argv[3])
    try:
        warpload.AutoTokenizer.from_pretrained(slow)
        slow_error = None
    except warpload.errors.SlowTokenizerError as err:
        slow_error = str(err)
    print(json.dumps({"ids": batch["input_ids"].tolist(), "text": text, "decoded": decoded, "slow": slow_error,
                      "light": light,
                      "loaded": sorted(name for name in sys.modules if name.split(".")[0] == "transformers")}))
""")


def test_tokenizer_never_imports_transformers(folders, tmp_path):
    slow = tmp_path / "slow"
    slow.mkdir()
    (slow / "tokenizer.model").write_bytes(b"\0")
    result = subprocess.run([sys.executable, "-c", NO_TRANSFORMERS, str(folders["llama"]), str(slow),
                             str(tmp_path / "saved")], capture_output=True, text=True, check=True)
    report = json.loads(result.stdout)
    assert report["loaded"] == []
    assert report["light"] == []  # a local load and a plain call import no torch, numpy, Hub client or Jinja
    reference = transformers.AutoTokenizer.from_pretrained(folders["llama"])
    assert report["ids"] == reference(["Hello, world!", "Hi"], padding=True)["input_ids"]
    assert report["text"] == reference.apply_chat_template([{"role": "user", "content": "Hi"}], tokenize=False,
                                                           add_generation_prompt=True)
    assert report["decoded"] == reference.batch_decode(report["ids"], skip_special_tokens=True)
    assert "pip install transformers" in report["slow"] and "tokenizer.model" in report["slow"]


def test_stop_strings_criteria_of_transformers_accepts_it(folders):
    """generate's stop_strings reads get_vocab / convert_ids_to_tokens / decode as transformers' criteria does."""
    ours = AutoTokenizer.from_pretrained(folders["gpt2"])
    criteria = transformers.StopStringCriteria(ours, ["fox"])
    ids = torch.tensor([ours("The quick brown fox")["input_ids"]])
    assert bool(criteria(ids, torch.zeros(1, 10))[0])
    assert not bool(criteria(torch.tensor([ours("The quick brown")["input_ids"]]), torch.zeros(1, 10))[0])


CLASS_CASES = [("llama", "LlamaTokenizer", None, {}), ("llama", "LlamaTokenizerFast", "llama", {"legacy": True}),
               ("llama", "LlamaTokenizer", "llama", {"add_prefix_space": False}),
               ("llama", "LlamaTokenizer", "mistral", {}), ("llama", "LlamaTokenizer", "phi3", {}),
               ("gpt2", "LlamaTokenizer", "llama", {}), ("gpt2", "GPT2Tokenizer", "gpt2", {}),
               ("gpt2", "Qwen2Tokenizer", "qwen2", {}), ("gpt2", "PreTrainedTokenizerFast", "qwen2", {}),
               ("gpt2", "Qwen2Tokenizer", None, {"add_prefix_space": True}), ("gpt2", None, "qwen3", {}),
               ("gpt2", "PreTrainedTokenizerFast", "qwen3", {}), ("llama", None, "idefics2", {}),
               ("llama", "LlamaTokenizer", "granite", {})]


@pytest.mark.parametrize("kind,tokenizer_class,model_type,extra", CLASS_CASES,
                         ids=[f"{kind}-{name}-{model}-{'-'.join(extra)}" for kind, name, model, extra in CLASS_CASES])
def test_declared_tokenizer_class_builds_what_transformers_builds(folders, tmp_path, kind, tokenizer_class,
                                                                  model_type, extra):
    """LlamaTokenizer rebuilds a Metaspace pipeline on tokenizer.json's vocabulary (unless the model type or a
    byte-level file keeps the file's); the outputs must follow transformers' choice either way."""
    import shutil

    folder = tmp_path / "declared"
    shutil.copytree(folders[kind], folder)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config.update(tokenizer_class=tokenizer_class, **extra)
    if tokenizer_class is None:
        del config["tokenizer_class"]
    config.pop("padding_side", None)
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    if model_type is not None:
        (folder / "config.json").write_text(json.dumps({"model_type": model_type}))
    reference, ours = both(folder)
    texts = [*TEXTS, "warpload<s>warpload  two  spaces"]
    assert dict(ours(texts, padding=True)) == dict(reference(texts, padding=True))
    assert ours.padding_side == reference.padding_side
    ids = reference(texts)["input_ids"]
    assert ours.batch_decode(ids) == reference.batch_decode(ids)
    assert ours.special_tokens_map == reference.special_tokens_map
    ours.save_pretrained(tmp_path / "saved")
    assert dict(transformers.AutoTokenizer.from_pretrained(tmp_path / "saved")(texts)) == dict(reference(texts))


@pytest.mark.parametrize("kind", KINDS)
def test_add_special_tokens_and_add_tokens_equal_transformers(folders, kind):
    reference, ours = both(folders[kind])
    for tokenizer in (reference, ours):
        assert tokenizer.add_special_tokens({"pad_token": "[PAD]", "extra_special_tokens": ["<tool>"]}) == 2
        assert tokenizer.add_tokens(["brandnew", "warpload"]) == 1
    assert (ours.pad_token, ours.pad_token_id, ours.extra_special_tokens, len(ours)) == (
        reference.pad_token, reference.pad_token_id, reference.extra_special_tokens, len(reference))
    texts = [*TEXTS, "a brandnew <tool> [PAD] call"]
    assert dict(ours(texts, padding=True)) == dict(reference(texts, padding=True))
    assert ours.batch_decode(ours(texts)["input_ids"], skip_special_tokens=True) == reference.batch_decode(
        reference(texts)["input_ids"], skip_special_tokens=True)
    with pytest.raises(ValueError, match="is not a valid special token"):
        ours.add_special_tokens({"not_a_token_name": "x"})


@pytest.mark.parametrize("kind", KINDS)
def test_pad_of_existing_encodings_equals_transformers(folders, kind):
    """tokenizer.pad, as data collators call it: lists of dicts, a dict of lists, tensors, one sequence."""
    reference, ours = both(folders[kind])
    features = [dict(reference(text, return_special_tokens_mask=True, return_token_type_ids=True)) for text in TEXTS]
    options = [{}, {"padding": "max_length", "max_length": 30}, {"pad_to_multiple_of": 8, "padding_side": "left"},
               {"return_tensors": "pt"}, {"return_attention_mask": False}, {"padding": False}]
    for option in options:
        assert as_lists(ours.pad(features, **option)) == as_lists(reference.pad(features, **option)), option
    batch = {"input_ids": [feature["input_ids"] for feature in features]}
    assert as_lists(ours.pad(batch)) == as_lists(reference.pad(batch))
    tensors = [{"input_ids": torch.tensor(feature["input_ids"])} for feature in features[:3]]
    assert as_lists(ours.pad(tensors)) == as_lists(reference.pad(tensors))
    assert as_lists(ours.pad(features[0], padding="max_length", max_length=40)) == as_lists(
        reference.pad(features[0], padding="max_length", max_length=40))


@pytest.mark.parametrize("tokenizer_class", ["LlamaTokenizer", "PreTrainedTokenizerFast"])
def test_transformers4_config_with_added_tokens_decoder(folders, tmp_path, tokenizer_class):
    """Most Hub repos were saved by transformers 4: added_tokens_decoder, add_bos_token and the template in
    tokenizer_config.json, a special_tokens_map.json that is then ignored."""
    folder = tmp_path / "v4"
    folder.mkdir()
    (folder / "tokenizer.json").write_bytes((folders["llama"] / "tokenizer.json").read_bytes())
    token = {"lstrip": False, "normalized": False, "rstrip": False, "single_word": False, "special": True}
    config = {"add_bos_token": True, "add_eos_token": False, "legacy": False, "model_max_length": 1000000000000,
              "added_tokens_decoder": {"0": {"content": "<unk>", **token}, "1": {"content": "<s>", **token},
                                       "2": {"content": "</s>", **token}},
              "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": None,
              "clean_up_tokenization_spaces": False, "chat_template": CHAT_TEMPLATE, "tokenizer_class": tokenizer_class,
              "sp_model_kwargs": {}, "use_default_system_prompt": False}
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    (folder / "special_tokens_map.json").write_text(json.dumps({"bos_token": "<|user|>"}))
    reference, ours = both(folder)
    assert ours.special_tokens_map == reference.special_tokens_map and ours.bos_token == "<s>"
    assert dict(ours(TEXTS)) == dict(reference(TEXTS))
    assert ours.batch_decode(ours(TEXTS)["input_ids"]) == reference.batch_decode(reference(TEXTS)["input_ids"])
    assert ours.apply_chat_template(CHAT) == reference.apply_chat_template(CHAT)
