"""`warpload generate PATH PROMPT`: load a checkpoint folder, generate, print the text and where load time went."""
from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any, Optional

TOKENIZER_FILE = "tokenizer.json"
# The synthetic checkpoints `--model` offers (warpload.bench.synthetic.SHAPES, named here to keep the CLI cheap).
SYNTHETIC_MODELS = ("gpt2", "gpt2-medium")


def add_parser(subparsers: "argparse._SubParsersAction") -> None:
    """Registers the `generate` subcommand."""
    from ..loading.options import BACKENDS

    parser = subparsers.add_parser(
        "generate", help="load a local checkpoint and generate text, timing each loading step",
        description="Loads a causal LM from a local folder with warpload and continues a prompt. Without network "
                    f"access no tokenizer is downloaded: the folder's {TOKENIZER_FILE} is used when the `tokenizers` "
                    "package is installed; otherwise pass token ids with --ids. Prints the load time split into "
                    "resolve (find files), plan (config, headers, model skeleton), read (weights into parameters) and "
                    "first token.")
    parser.add_argument("path", nargs="?", help="checkpoint folder (config.json and weights) or Hub repo id")
    parser.add_argument("--model", choices=sorted(SYNTHETIC_MODELS),
                        help="instead of PATH, a synthetic GPT-2-shaped checkpoint with random weights (generated "
                             "once under ~/.cache/warpload): the demo that needs no download")
    parser.add_argument("prompt", help=f"text, encoded with the folder's {TOKENIZER_FILE}; with --ids, token ids "
                                       "separated by commas or spaces")
    parser.add_argument("--ids", action="store_true", help="the prompt is token ids; output is token ids too")
    parser.add_argument("--max-new-tokens", type=int, default=20, help="tokens to generate (default 20)")
    parser.add_argument("--dtype", default="auto", help="parameter dtype: auto (the config's), float32, bfloat16, ...")
    parser.add_argument("--device", default="cpu", help="device to load onto (default cpu)")
    parser.add_argument("--backend", choices=BACKENDS, default="auto", help="model implementation (default auto)")
    parser.add_argument("--sample", action="store_true", help="sample instead of greedy decoding")
    parser.add_argument("--temperature", type=float, help="sampling temperature")
    parser.add_argument("--top-k", type=int, help="sample among the k most likely tokens")
    parser.add_argument("--top-p", type=float, help="sample among the most likely tokens of this total probability")
    parser.add_argument("--seed", type=int, default=0, help="random seed for sampling (default 0)")
    parser.set_defaults(command=run)


def run(args: argparse.Namespace) -> int:
    """Runs `warpload generate`; returns the exit status (2 for a prompt it cannot encode)."""
    import torch

    from ..loading.auto import AutoModelForCausalLM

    if (args.path is None) == (args.model is None):
        print("warpload generate: give a checkpoint PATH or --model, not both", file=sys.stderr)
        return 2
    if args.model is not None:
        from ..bench import synthetic

        args.path = os.path.dirname(synthetic.announced_checkpoint(args.model))
    tokenizer = None if args.ids else _folder_tokenizer(args.path)
    if not args.ids and tokenizer is None:
        print(f"warpload generate: cannot encode text: {os.path.join(args.path, TOKENIZER_FILE)} is missing or the "
              "`tokenizers` package is not installed; pass token ids with --ids (e.g. --ids '15496,995')",
              file=sys.stderr)
        return 2
    try:
        prompt_ids = _token_ids(args.prompt) if args.ids else tokenizer.encode(args.prompt).ids
    except ValueError as err:
        print(f"warpload generate: {err}", file=sys.stderr)
        return 2
    started = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(args.path, dtype=args.dtype, device_map=args.device,
                                                 backend=args.backend)
    loaded = time.perf_counter()
    input_ids = torch.tensor([prompt_ids], device=model.device)
    options = _generation_options(args)
    torch.manual_seed(args.seed)
    first = time.perf_counter()
    model.generate(input_ids, **{**options, "max_new_tokens": 1})
    first_token_s = time.perf_counter() - first
    torch.manual_seed(args.seed)
    decode_started = time.perf_counter()
    output = model.generate(input_ids, **options)
    decode_s = time.perf_counter() - decode_started
    new_ids = output[0, len(prompt_ids):].tolist()
    print(",".join(map(str, new_ids)) if tokenizer is None else tokenizer.decode(prompt_ids + new_ids))
    timings = model.load_timings
    print(f"load {loaded - started:.3f} s: resolve {timings.resolve_s:.3f} s, plan {timings.plan_s:.3f} s, "
          f"read {timings.read_s:.3f} s; first token {first_token_s:.3f} s "
          f"(prompt to first token {loaded - started + first_token_s:.3f} s); "
          f"{len(new_ids)} tokens in {decode_s:.3f} s", file=sys.stderr)
    return 0


def _folder_tokenizer(path: str) -> Optional[Any]:
    """The folder's tokenizer.json as a `tokenizers.Tokenizer`, or None without the file or the package."""
    tokenizer_path = os.path.join(path, TOKENIZER_FILE)
    if not os.path.isfile(tokenizer_path):
        return None
    try:
        from tokenizers import Tokenizer
    except ImportError:
        return None
    return Tokenizer.from_file(tokenizer_path)


def _token_ids(text: str) -> list[int]:
    parts = text.replace(",", " ").split()
    if not parts or not all(part.isdigit() for part in parts):
        raise ValueError(f"--ids expects token ids such as '15496,995', got {text!r}")
    return [int(part) for part in parts]


def _generation_options(args: argparse.Namespace) -> dict[str, Any]:
    options: dict[str, Any] = {"max_new_tokens": args.max_new_tokens, "do_sample": args.sample}
    for name in ("temperature", "top_k", "top_p"):
        if getattr(args, name) is not None:
            options[name] = getattr(args, name)
    return options
