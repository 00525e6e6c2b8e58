"""`bai-probe`: sample candidate actors with rollout settings and compare their responses."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from tqdm import tqdm

from bai_core.cli import (
    SPELLED,
    BaiError,
    UsageError,
    add_verbose,
    check_out_path,
    deprecated_alias,
    tool_main,
    writing,
)
from bai_core.config import check_values
from bai_tools.generation import (
    Generation,
    SamplingSettings,
    default_prompts_path,
    generate_vllm,
    load_prompts,
)

PROG = "bai-probe"


class ProbeError(BaiError):
    """A candidate that cannot be probed (no model folder, no config.json)."""


def check_settings(args: argparse.Namespace) -> None:
    """Reject bad sampling / bucket settings, output paths and candidates before any engine."""
    for name, value in (("--n-samples", args.n_samples), ("--max-tokens", args.max_tokens)):
        if value < 1:
            raise UsageError(f"{name} must be >= 1, got {value}")
    if not math.isfinite(args.temperature) or args.temperature < 0:
        raise UsageError(f"--temperature must be a finite number >= 0, got {args.temperature}")
    if not math.isfinite(args.top_p) or not 0.0 < args.top_p <= 1.0:
        raise UsageError(f"--top-p must be in (0, 1], got {args.top_p}")
    try:
        check_values({"bucket_width": args.bucket_width, "num_buckets": args.num_buckets},
                     "tool")
    except ValueError as exc:
        raise UsageError(exc) from None
    typed = getattr(args, SPELLED, None) or {}  # an old spelling is named as the user typed it
    check_out_path(args.json, typed.get("json", "--json"))
    check_out_path(args.png, typed.get("png", "--png"), (".png",))
    for model in args.models:
        check_model_dir(model)


def check_model_dir(path: Path) -> Path:
    """A candidate must be a local model folder with a config.json."""
    if not path.is_dir():
        raise ProbeError(f"model directory not found: {path}")
    if not (path / "config.json").is_file():
        raise ProbeError(f"not a model directory (no config.json): {path}")
    return path


def candidate_names(paths: Sequence[Path]) -> list[str]:
    """Folder names, or full paths where two candidates share a folder name."""
    names = [p.name or str(p) for p in paths]
    return [str(p) if names.count(n) > 1 else n for p, n in zip(paths, names, strict=True)]


def run_probe(
    model_dirs: Sequence[Path], prompts_path: Path, settings: SamplingSettings, *,
    input_key: str = "prompt", generate: Callable[..., Generation] = generate_vllm,
    generate_kwargs: dict[str, Any] | None = None, bucket_width: int = 100,
    num_buckets: int = 20, include_samples: bool = True,
) -> dict[str, Any]:
    """Sample every candidate (one engine at a time) and summarize; returns the JSON report.
    Raises ProbeError, PromptFileError or GenerationError (one-line messages)."""
    dirs = [check_model_dir(Path(p)) for p in model_dirs]
    prompts = load_prompts(prompts_path, input_key=input_key)
    from bai_tools.probe_summary import summarize_samples  # torch: only once input is checked

    references = [p.reference for p in prompts]
    candidates = []
    for name, model_dir in tqdm(list(zip(candidate_names(dirs), dirs)), desc="candidates"):
        generation = generate(model_dir, [p.messages for p in prompts], settings,
                              **(generate_kwargs or {}))
        opened = generation.think_open_in_prompt
        summary = summarize_samples(
            generation.samples, think_close_ids=generation.think_close_ids,
            references=references, think_open_in_prompt=opened, bucket_width=bucket_width,
            num_buckets=num_buckets)
        per_sample = summary.pop("per_sample")
        candidate = {"name": name,
                     "model_dir": str(model_dir), "engine": generation.engine,
                     "think_close_ids": list(generation.think_close_ids),
                     "think_open_in_prompt_ratio": sum(opened) / len(opened), **summary}
        if include_samples:
            candidate["samples"] = [
                {**row, "token_ids": list(s.token_ids), "text": s.text}
                for row, s in zip(per_sample, generation.samples, strict=True)
            ]
        candidates.append(candidate)
    return {
        "tool": PROG,
        "settings": {**dataclasses.asdict(settings), "bucket_width": bucket_width,
                     "num_buckets": num_buckets},
        "prompts": {"path": str(prompts_path), "count": len(prompts),
                    "with_reference": sum(r is not None for r in references)},
        "candidates": candidates,
    }


TABLE_COLUMNS: list[tuple[str, str, str]] = [
    ("samples", "num_samples", "{:d}"),
    ("len mean", "bai/response_length/mean", "{:.1f}"),
    ("p10", "bai/response_length/p10", "{:.0f}"),
    ("median", "bai/response_length/median", "{:.0f}"),
    ("p90", "bai/response_length/p90", "{:.0f}"),
    ("clip", "bai/response_length/clip_ratio", "{:.2f}"),
    ("think closed", "bai/think/closed_ratio", "{:.2f}"),
    ("think len", "bai/think/think_length_mean", "{:.1f}"),
    ("answer len", "bai/think/answer_length_mean", "{:.1f}"),
    ("reward", "bai/reward/mean", "{:.3f}"),
    ("scored", "num_scored", "{:d}"),
]


def text_table(first: str, items: Sequence[Mapping[str, Any]], names: Sequence[str],
               columns: Sequence[tuple[str, str, str]]) -> str:
    """Plain-text table: one row per item, a value from the item or its `metrics` per column."""
    rows = [[first, *(c[0] for c in columns)]]
    for item, name in zip(items, names, strict=True):
        values = [item.get(key, item["metrics"].get(key)) for _, key, _ in columns]
        rows.append([name, *("-" if v is None else fmt.format(v)
                             for v, (_, _, fmt) in zip(values, columns))])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                       for i, (c, w) in enumerate(zip(row, widths))) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _engine_arg(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def add_sampling_options(p: argparse.ArgumentParser | argparse._ArgumentGroup,
                         n_dest: str) -> None:
    """--prompts, -n, --max-tokens and --seed: as bai-probe, bai-sweep-probe, bai-sweep --probe."""
    p.add_argument("--prompts", type=Path, default=None,
                   help="JSONL with 'prompt' (+ optional 'answer'/'label'); "
                   "default: 16 math prompts shipped with bai")
    p.add_argument("-n", "--n-samples", dest=n_dest, type=int, default=4,
                   help="samples per prompt (4)")
    p.add_argument("--max-tokens", type=int, default=256, help="generation limit (256)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (0)")


def build_parser() -> argparse.ArgumentParser:
    """Command-line interface of bai-probe."""
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Sample candidate actors (e.g. BAI merges) with rollout settings "
        "(temperature 1, top_p 1, chat template) and compare response length, clip ratio, "
        "think-block closure and math reward before spending a PPO run on them.",
    )
    p.add_argument("models", nargs="+", type=Path, metavar="MODEL_DIR")
    add_sampling_options(p, "n_samples")
    p.add_argument("--input-key", default="prompt", help="prompt field name (default: prompt)")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--dtype", default="auto", help="vLLM dtype (auto: the model's)")
    p.add_argument("--no-enforce-eager", dest="enforce_eager", action="store_false",
                   help="let vLLM compile / capture graphs (slower start, faster decode)")
    p.add_argument("--engine-arg", action="append", type=_engine_arg, default=[],
                   metavar="KEY=VALUE", help="extra vllm.LLM argument (repeatable)")
    p.add_argument("--bucket-width", type=int, default=100)
    p.add_argument("--num-buckets", type=int, default=20)
    for name, what in (("json", "the full report as JSON"), ("png", "a comparison figure")):
        p.add_argument(f"--{name}", type=Path, metavar="FILE", help=f"write {what}")
        deprecated_alias(p, f"--{name}-out", f"--{name}", name, type=Path)
    p.add_argument("--no-samples", dest="include_samples", action="store_false",
                   help="leave per-sample token ids and texts out of the JSON")
    add_verbose(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `bai-probe` (errors: bai_core.cli's one-line convention)."""
    return tool_main(PROG, build_parser(), _run, argv, vllm=True)


def _run(args: argparse.Namespace) -> int:
    check_settings(args)
    settings = SamplingSettings(n=args.n_samples, max_tokens=args.max_tokens,
                                temperature=args.temperature, top_p=args.top_p, seed=args.seed)
    report = run_probe(
        args.models, args.prompts or default_prompts_path(), settings, input_key=args.input_key,
        generate_kwargs={"dtype": args.dtype, "enforce_eager": args.enforce_eager,
                         "engine_args": dict(args.engine_arg)},
        bucket_width=args.bucket_width, num_buckets=args.num_buckets,
        include_samples=args.include_samples)
    cands = report["candidates"]
    print(text_table("candidate", cands, [c["name"] for c in cands], TABLE_COLUMNS), flush=True)
    if args.json:
        with writing("--json", args.json) as path:
            path.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    if args.png:
        from bai_tools.plots import plot_probe

        with writing("--png", args.png) as path:
            plot_probe(report, path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
