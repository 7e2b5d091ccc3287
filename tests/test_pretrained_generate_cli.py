"""`warpload generate`: loads a folder, continues a prompt given as token ids or text, prints the load time split."""
from __future__ import annotations

import argparse

import pytest
import torch

pytest.importorskip("transformers")

from model_checkpoints import save_checkpoint, tiny_transformers_model  # noqa: E402
from warpload import AutoModelForCausalLM
from warpload.cli import generate as generate_cli


def run_cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="warpload")
    generate_cli.add_parser(parser.add_subparsers())
    args = parser.parse_args(["generate", *argv])
    return args.command(args)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return save_checkpoint(tiny_transformers_model("llama"), tmp_path_factory.mktemp("llama"))


def test_token_ids_in_token_ids_out(folder, capsys):
    assert run_cli(str(folder), "5, 6,7", "--ids", "--max-new-tokens", "4") == 0
    out, err = capsys.readouterr()
    expected = AutoModelForCausalLM.from_pretrained(folder).generate(torch.tensor([[5, 6, 7]]), max_new_tokens=4)
    assert out.strip() == ",".join(map(str, expected[0, 3:].tolist()))
    for phase in ("resolve", "plan", "read", "first token"):
        assert phase in err


def test_text_prompt_uses_the_folders_tokenizer(folder, capsys, tmp_path):
    tokenizers = pytest.importorskip("tokenizers")
    vocab = {f"w{i}": i for i in range(128)}
    tokenizer = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="w0"))
    tokenizer.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    tokenizer.decoder = tokenizers.decoders.WordPiece()
    tokenizer.save(str(folder / "tokenizer.json"))
    try:
        assert run_cli(str(folder), "w5 w6 w7", "--max-new-tokens", "3") == 0
    finally:
        (folder / "tokenizer.json").unlink()
    out, _ = capsys.readouterr()
    assert out.split()[:3] == ["w5", "w6", "w7"] and len(out.split()) == 6


def test_text_without_a_tokenizer_asks_for_ids(folder, capsys):
    assert run_cli(str(folder), "hello world") == 2
    assert "--ids" in capsys.readouterr().err


def test_bad_ids_are_reported(folder, capsys):
    assert run_cli(str(folder), "5,x", "--ids") == 2
    assert "token ids" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [("5,6", "--ids"), ("somewhere", "5,6", "--ids", "--model", "gpt2")],
                         ids=["neither", "both"])
def test_path_or_synthetic_model_exactly_one(argv, capsys):
    assert run_cli(*argv) == 2
    assert "PATH or --model" in capsys.readouterr().err


def test_synthetic_model_is_generated_once_and_loaded(monkeypatch, tmp_path, capsys):
    from warpload.bench import synthetic

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(synthetic, "SHAPES", {**synthetic.SHAPES, "gpt2": synthetic.GPT2Shape(
        n_layer=1, n_embd=64, n_positions=16, vocab_size=50257)})
    assert run_cli("--model", "gpt2", "5,6", "--ids", "--max-new-tokens", "3") == 0
    out, err = capsys.readouterr()
    assert len(out.strip().split(",")) == 3
    assert "generating the synthetic gpt2 checkpoint" in err
    assert (tmp_path / "warpload" / "synthetic-gpt2" / "config.json").is_file()
