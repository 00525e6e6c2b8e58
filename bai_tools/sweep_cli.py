"""`bai-sweep`: K candidate actors from one bai recipe (the engine is bai_mergekit.sweep),
then, with --probe, their sweep probe (bai_tools.sweep_probe)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from bai_core.cli import UsageError, add_verbose, quiet_dependency_warnings, run_main
from bai_tools.probe import add_sampling_options

PROG = "bai-sweep"
SIZE_SUFFIXES = {"k": 10**3, "m": 10**6, "b": 10**9}  # as mergekit's --out-shard-size


def _floats(text: str) -> tuple[float, ...]:
    """`0.1,0.5` -> (0.1, 0.5); "" -> ()."""
    try:
        return tuple(float(x) for x in text.split(",")) if text.strip() else ()
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be comma-separated numbers, got {text!r}") from None


def _shard_size(text: str) -> int:
    """`500M`, `2B`, `1000000` -> a positive int; anything else is refused by value."""
    raw = text.strip()
    scale = SIZE_SUFFIXES.get(raw[-1:].lower(), 1)
    try:
        size = int(float(raw[:-1] if scale != 1 else raw) * scale)
    except (ValueError, OverflowError):
        size = -1
    if size <= 0:
        raise argparse.ArgumentTypeError(
            f"must be a positive size like 500M or 2B, got {text!r}")
    return size


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG, description="Write K candidate BAI actors from one `merge_method: bai` "
        "RECIPE into OUT_DIR, reading each input tensor once.")
    p.add_argument("recipe", type=Path, metavar="RECIPE")
    p.add_argument("out_dir", type=Path, metavar="OUT_DIR")
    p.add_argument("--base-weight", type=_floats, default=(),
                   help="comma-separated alphas, e.g. 0.1,0.3,0.5,0.7,0.9 (default: the "
                   "recipe's)")
    p.add_argument("--weights", type=_floats, action="append", default=[],
                   help="stage-1 weights, one per model, e.g. 0.5,0.5; repeat for more sets")
    p.add_argument("--out-shard-size", type=_shard_size, default="1B",
                   help="shard size; K writers each buffer up to one shard (default: 1B)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_verbose(p)
    probe = p.add_argument_group("--probe: sample every candidate (as bai-sweep-probe)")
    probe.add_argument("--probe", action="store_true",
                       help="after the grid is written, probe it (bai_tools.sweep_probe)")
    add_sampling_options(probe, "n")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point (bai_core.cli's errors; SIGTERM/SIGINT exit 128 + signal)."""
    quiet_dependency_warnings()
    args = build_parser().parse_args(argv)
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    return run_main(PROG, lambda: _run(args), args.verbose)


def _run(args: argparse.Namespace) -> int:
    from bai_mergekit.output import merge_signals
    from bai_mergekit.sweep import run_sweep

    for name, value in (("-n", args.n), ("--max-tokens", args.max_tokens)):
        if value < 1:
            raise UsageError(f"{name} must be >= 1, got {value}")
    if args.prompts is not None and not args.prompts.is_file():
        raise UsageError(f"--prompts file not found: {args.prompts}")
    with merge_signals():
        paths = run_sweep(args.recipe, args.out_dir, list(args.base_weight), args.weights,
                          args.out_shard_size, quiet=args.quiet)
    print("\n".join(map(str, paths)), flush=True)
    if args.probe:
        from bai_tools.sweep_probe import probe_sweep_dir

        probe_sweep_dir(args.out_dir, args.prompts, args.n, args.max_tokens, args.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
