"""The `warpload` command line: one parser and one function per subcommand."""
from __future__ import annotations

import argparse
import os
import sys
from typing import Callable, Optional, Sequence

from ..bench import synthetic


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Runs the subcommand named in argv (sys.argv[1:] by default); returns the exit status."""
    args = build_parser().parse_args(argv)
    return args.command(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="warpload", description="Load Hugging Face checkpoints as fast as the hardware allows.")
    subcommands = parser.add_subparsers(metavar="COMMAND", required=True)
    add_bench_parser(subcommands)
    from . import generate as generate_cli
    from . import inspect as inspect_cli

    generate_cli.add_parser(subcommands)
    inspect_cli.add_parser(subcommands)
    return parser


def comma_list(choices: Sequence[str], *, allow_empty: bool = False) -> Callable[[str], list[str]]:
    """An argparse type for 'a,b,c' whose items must be among choices; '' is [] if allow_empty."""
    def parse(text: str) -> list[str]:
        items = [item.strip() for item in text.split(",") if item.strip()]
        if not items and not allow_empty:
            raise argparse.ArgumentTypeError(f"name at least one of {','.join(choices)}")
        unknown = [item for item in items if item not in choices]
        if unknown:
            raise argparse.ArgumentTypeError(f"unknown {', '.join(unknown)}; choose from {','.join(choices)}")
        return items
    return parse


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive count")
    return value


def add_bench_parser(subcommands: argparse._SubParsersAction) -> None:
    from ..bench.harness import CACHE_STATES, PEERS

    parser = subcommands.add_parser(
        "bench", help="time warpload against safetensors and other loaders on one file",
        description="Loads one safetensors file with warpload and its peers, warm and cold page cache, "
                    "next to the machine's measured read and memcpy limits, and prints a table.")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("path", nargs="?", help="a .safetensors file (default: a synthetic checkpoint, see --model)")
    source.add_argument("--model", choices=sorted(synthetic.SIZES), default="gpt2",
                        help="synthetic checkpoint to generate (once, under ~/.cache/warpload) and load; default gpt2")
    parser.add_argument("--repeat", type=positive_int, default=5, help="repetitions per case; the median is shown")
    parser.add_argument("--cache", type=comma_list(CACHE_STATES), default=list(CACHE_STATES),
                        help="page-cache states to measure, comma-separated (default: warm,cold)")
    parser.add_argument("--peers", type=comma_list(tuple(PEERS), allow_empty=True), default=list(PEERS),
                        help=f"other loaders to time, comma-separated, '' for none (default: {','.join(PEERS)})")
    parser.add_argument("--settle", type=float, default=0.0, metavar="SECONDS",
                        help="idle time before each run, so freed memory is returned to a VM's host "
                             "as before a fresh process's first load (default 0)")
    # Fresh processes by default: in one process glibc hands each run the memory the previous run
    # freed, which flatters per-tensor loaders (warpload's GPT-2 warm load read 0.66x safetensors+copy
    # in one process, 0.97x in fresh ones); a user's first load gets fresh memory.
    parser.add_argument("--fresh-process", action="store_true", default=True,
                        help="time every run in a new Python process, so no run reuses memory an earlier one "
                             "freed, as on a user's first load (torch and the loaders are imported before the "
                             "clock starts; the default)")
    parser.add_argument("--in-process", dest="fresh_process", action="store_false",
                        help="time every run in this process: quicker, but runs reuse memory earlier ones freed")
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table for RESULTS.md")
    parser.set_defaults(command=bench)


def bench(args: argparse.Namespace) -> int:
    from ..bench import harness

    path = args.path or synthetic.announced_checkpoint(args.model)
    if not os.path.isfile(path):
        print(f"warpload bench: {path}: no such file", file=sys.stderr)
        return 2
    settings = harness.Settings(repeat=args.repeat, settle_s=args.settle, fresh_process=args.fresh_process)
    report = harness.run_benchmark(path, caches=args.cache, peers=args.peers, settings=settings)
    print(harness.format_report(report, markdown=args.markdown))
    return 0


if __name__ == "__main__":
    sys.exit(main())
