"""First use of a tokenizer in a fresh process: `import warpload; warpload.AutoTokenizer.from_pretrained(folder)`
vs `import transformers; transformers.AutoTokenizer.from_pretrained(folder)`, each followed by one call.

Builds two local tokenizer folders once (cached under --cache): a GPT-2-style byte-level BPE of --vocab tokens
(trained here with `tokenizers` on seeded pseudo-words, saved by transformers with special tokens and a chat
template; tokenizer_class TokenizersBackend, loaded as it is) and the same vocabulary declared as a Llama-2-style
LlamaTokenizer (metaspace, which both libraries rebuild from the vocabulary). Each case runs in its own process,
the cases interleaved, --repeat times; medians. The child reports its own time from before the import to after
the first encoding, and the process's wall time (interpreter start included) is taken from outside.

    .venv/bin/python benchmarks/tokenizer.py --repeat 9
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

CHILD = """
import sys, time
started = time.perf_counter()
if sys.argv[1] == "warpload":
    import warpload
    tokenizer = warpload.AutoTokenizer.from_pretrained(sys.argv[2])
else:
    import transformers
    tokenizer = transformers.AutoTokenizer.from_pretrained(sys.argv[2])
ids = tokenizer(["Hello, world! The quick brown fox.", "A second line"], padding=True)["input_ids"]
text = tokenizer.apply_chat_template([{"role": "user", "content": "Hi"}], tokenize=False, add_generation_prompt=True)
print(time.perf_counter() - started, len(ids[0]), len(text), "transformers" in sys.modules)
"""
TEMPLATE = ("{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}{{ eos_token }}\n"
            "{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}")


def corpus(words: int, seed: int = 0) -> list[str]:
    """Seeded pseudo-text: enough distinct words for a BPE of tens of thousands of merges."""
    rng = random.Random(seed)
    letters = "etaoinshrdlucmfwypvbgkjqxz"
    weights = [len(letters) - index for index in range(len(letters))]
    vocabulary = ["".join(rng.choices(letters, weights, k=rng.randint(2, 11))) for _ in range(words // 4)]
    return [" ".join(rng.choices(vocabulary, k=24)) + rng.choice([".", ",", "!", "?"]) for _ in range(words // 24)]


def build(folder: Path, vocab: int) -> dict[str, Path]:
    """The two tokenizer folders (built once into `folder`)."""
    cases = {"byte-level BPE (TokenizersBackend)": folder / "bytelevel", "LlamaTokenizer (rebuilt)": folder / "llama"}
    if all((path / "tokenizer.json").is_file() for path in cases.values()):
        return cases
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    text = corpus(2_000_000)
    byte_level = Tokenizer(models.BPE())
    byte_level.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    byte_level.decoder = decoders.ByteLevel()
    byte_level.train_from_iterator(text, trainers.BpeTrainer(
        vocab_size=vocab, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False))
    PreTrainedTokenizerFast(tokenizer_object=byte_level, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                            pad_token="<|endoftext|>", chat_template=TEMPLATE).save_pretrained(
        cases["byte-level BPE (TokenizersBackend)"])
    metaspace = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    metaspace.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    metaspace.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                           decoders.Strip(" ", 1, 0)])
    metaspace.train_from_iterator(text, trainers.BpeTrainer(
        vocab_size=vocab, special_tokens=["<unk>", "<s>", "</s>"], show_progress=False,
        initial_alphabet=[f"<0x{byte:02X}>" for byte in range(256)]))
    llama = cases["LlamaTokenizer (rebuilt)"]
    PreTrainedTokenizerFast(tokenizer_object=metaspace, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                            pad_token="<unk>", add_bos_token=True, chat_template=TEMPLATE).save_pretrained(llama)
    config = json.loads((llama / "tokenizer_config.json").read_text())
    config.update(tokenizer_class="LlamaTokenizer", legacy=False)
    (llama / "tokenizer_config.json").write_text(json.dumps(config))
    return cases


def run_once(library: str, folder: Path) -> tuple[float, float, bool]:
    """(the child's own seconds from import to first encoding, the process's wall seconds, transformers loaded)."""
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", CHILD, library, os.fspath(folder)], check=True,
                            capture_output=True, text=True)
    wall = time.perf_counter() - started
    inner, _, _, loaded = result.stdout.split()
    return float(inner), wall, loaded == "True"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=9)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "warpload-bench" / "tokenizer")
    parser.add_argument("--rebuild", action="store_true", help="train the tokenizers again")
    args = parser.parse_args()
    if args.rebuild:
        shutil.rmtree(args.cache, ignore_errors=True)
    cases = build(args.cache, args.vocab)
    import tokenizers
    import transformers

    import warpload

    print(f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {platform.node()}, {os.cpu_count()} cores, python "
          f"{platform.python_version()}; warpload {warpload.__version__}, transformers {transformers.__version__}, "
          f"tokenizers {tokenizers.__version__}; vocab {args.vocab}, {args.repeat} fresh processes per cell, "
          "interleaved, medians")
    print("\n| tokenizer | tokenizer.json | warpload s (in process) | transformers s (in process) | ratio | "
          "warpload s (process) | transformers s (process) | ratio |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, folder in cases.items():
        runs: dict[str, list[tuple[float, float, bool]]] = {"warpload": [], "transformers": []}
        for _ in range(args.repeat):
            for library in runs:
                runs[library].append(run_once(library, folder))
        if any(loaded for _, _, loaded in runs["warpload"]):
            raise SystemExit("warpload's run imported transformers")
        inner = {library: statistics.median(run[0] for run in values) for library, values in runs.items()}
        wall = {library: statistics.median(run[1] for run in values) for library, values in runs.items()}
        size = (folder / "tokenizer.json").stat().st_size / 2**20
        print(f"| {name} | {size:.1f} MiB | {inner['warpload']:.3f} | {inner['transformers']:.3f} | "
              f"{inner['transformers'] / inner['warpload']:.1f}x | {wall['warpload']:.3f} | "
              f"{wall['transformers']:.3f} | {wall['transformers'] / wall['warpload']:.1f}x |")


if __name__ == "__main__":
    main()
