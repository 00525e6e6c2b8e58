"""`bai-compare`: train several actors with one launch recipe and compare their curves."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import re
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bai_core.cli import BaiError, UsageError, add_verbose, tool_main
from bai_tools.compare_runs import RunPlan, RunResult, budget_args, dry_run_argv, train_actor
from openrlhf_patches.argv import flag_value

LOG = logging.getLogger(__name__)
PROG = "bai-compare"
REPO = Path(__file__).resolve().parent.parent
RECIPES = REPO / "recipes" / "openrlhf"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def _echo(message: str) -> None:
    print(f"{PROG}: {message}", file=sys.stderr, flush=True)


def resolve_recipe(text: str) -> Path:
    """A recipe file, or the name of one in recipes/openrlhf/ (`reinforce_pp_bai_7b`)."""
    path = Path(text)
    if path.is_file():
        return path.resolve()
    for candidate in (RECIPES / text, RECIPES / f"{text}.sh"):
        if candidate.is_file():
            return candidate
    raise UsageError(f"recipe {text!r}: no such file (nor in {RECIPES})")


def parse_actor(text: str) -> tuple[str, str]:
    """NAME=PATH (or a hub id); a local path is made absolute."""
    name, sep, where = text.partition("=")
    if not sep or not name or not where:
        raise UsageError(f"--actor {text!r}: expected NAME=PATH")
    if not _NAME.match(name):
        raise UsageError(f"--actor {text!r}: NAME may hold letters, digits, '.', '_', '-'")
    path = Path(where).expanduser()
    local = path.exists() or where.startswith((".", "/", "~")) or where.count("/") != 1
    return name, str(path.resolve()) if local else where


def parse_env(text: str, flag: str = "--env") -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", key):
        raise UsageError(f"{flag} {text!r}: expected KEY=VALUE")
    return key, value


def parse_seeds(text: str, flag: str = "--seeds") -> list[int]:
    """Comma-separated distinct integers."""
    try:
        seeds = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UsageError(f"{flag} {text!r}: expected comma-separated integers") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise UsageError(f"{flag} {text!r}: expected distinct integers")
    return seeds


def per_actor(values: Sequence[str], flag: str, names: Sequence[str]) -> dict[str, list[str]]:
    """NAME=REST options (repeatable) by actor; an unknown NAME is refused."""
    out: dict[str, list[str]] = {}
    for text in values:
        name, sep, rest = text.partition("=")
        if not sep or not rest:
            raise UsageError(f"{flag} {text!r}: expected NAME=...")
        if name not in names:
            raise UsageError(f"{flag} {text!r}: no --actor named {name!r}")
        out.setdefault(name, []).append(rest)
    return out


def run_specs(actors: Sequence[tuple[str, str]], args: argparse.Namespace
              ) -> list[tuple[str, str, str, int, dict[str, str]]]:
    """(actor name, run name, path, seed, recipe env) per run: every actor once per seed (its
    --actor-seeds, else --seeds, else --seed); runs/NAME for one seed, runs/NAME-seedS else."""
    names = [n for n, _ in actors]
    default = parse_seeds(args.seeds) if args.seeds else [args.seed]
    seeds = {n: parse_seeds(v[-1], "--actor-seeds")
             for n, v in per_actor(args.actor_seeds, "--actor-seeds", names).items()}
    envs = {n: dict(parse_env(e, "--actor-env") for e in v)
            for n, v in per_actor(args.actor_env, "--actor-env", names).items()}
    specs = []
    for name, path in actors:
        mine = seeds.get(name, default)
        for seed in mine:
            run = name if len(mine) == 1 else f"{name}-seed{seed}"
            specs.append((name, run, path, seed, envs.get(name, {})))
    return specs


def _floats(text: str, flag: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UsageError(f"{flag} {text!r}: expected comma-separated numbers") from None


def sweep_actors(recipe: Path, alphas: str, weights: str | None, out: Path
                 ) -> list[tuple[str, str]]:
    """Merge the alpha grid with `bai-sweep` into out/actors (reused when the same grid is
    there) and name each candidate by its folder (bai-a0.5-w0.5_0.5, ...)."""
    wanted = _floats(alphas, "--alpha")
    dest = out / "actors"
    index = dest / "sweep.json"

    def matches() -> list[dict[str, Any]] | None:
        try:
            cands = json.loads(index.read_text())["candidates"]
        except (OSError, ValueError, KeyError):
            return None
        got = sorted(c["base_weight"] for c in cands)
        same_weights = weights is None or all(
            c["weights"] == _floats(weights, "--weights") for c in cands)
        return cands if got == sorted(wanted) and same_weights else None

    cands = matches()
    if cands is None:
        argv = [_tool("bai-sweep"), str(recipe), str(dest), "--base-weight", alphas, "--quiet"]
        if weights:
            argv += ["--weights", weights]
        _echo(f"merging the alpha grid {alphas}: {' '.join(argv[1:])}")
        proc = subprocess.run(argv, capture_output=True, text=True)
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["(no output)"]
            raise BaiError(f"bai-sweep failed ({proc.returncode}): {tail[0]}")
        cands = matches() or []
    return [(c["path"], str(dest / c["path"])) for c in cands]


def _tool(name: str) -> str:
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.is_file() else name


def evaluate(results: Sequence[RunResult], args: argparse.Namespace, out: Path
             ) -> dict[str, float | None]:
    """Held-out accuracy of each trained actor: `bai-probe` on the final model (the math reward
    is correctness); one call for the actors not evaluated yet, results kept per actor."""
    acc: dict[str, float | None] = {}
    todo = []
    for r in results:
        cache = out / "eval" / f"{r.name}.json"
        if r.reused and cache.is_file():
            acc[r.name] = json.loads(cache.read_text()).get("accuracy")
        elif not (r.run_dir / "config.json").is_file():
            _echo(f"{r.name}: no final model in {r.run_dir} (config.json), no held-out accuracy")
            acc[r.name] = None
        else:
            todo.append(r)
    if not todo:
        return acc
    report = out / "eval" / "probe.json"
    argv = [_tool("bai-probe"), *(str(r.run_dir) for r in todo), "--prompts", str(args.heldout),
            "-n", str(args.eval_n), "--max-tokens", str(args.eval_max_tokens),
            "--temperature", str(args.eval_temperature), "--seed", str(args.seed),
            "--json", str(report), "--no-samples"]
    if args.cpu:
        argv += ["--dtype", "float32"]
    _echo(f"held-out accuracy: bai-probe on {len(todo)} trained actor(s)")
    report.parent.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(argv, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["(no output)"]
        _echo(f"held-out evaluation failed ({proc.returncode}): {tail[0]}")
        return {**acc, **{r.name: None for r in todo}}
    cands = json.loads(report.read_text())["candidates"]
    for r, cand in zip(todo, cands, strict=True):
        value = cand["metrics"].get("bai/reward/mean")
        acc[r.name] = value
        (out / "eval" / f"{r.name}.json").write_text(json.dumps(
            {"accuracy": value, "model_dir": cand["model_dir"],
             "num_scored": cand.get("num_scored"), "settings": json.loads(
                 report.read_text())["settings"]}, indent=1) + "\n")
    return acc


def build_parser() -> argparse.ArgumentParser:
    """Command line of bai-compare (arguments after `--` go to the recipe / bai-train)."""
    p = argparse.ArgumentParser(
        prog=PROG,
        usage=f"{PROG} RECIPE (--actor NAME=PATH ... | --merge-recipe YAML --alpha A,B) "
        "--out DIR --steps N [options] [-- EXTRA BAI-TRAIN ARGS]",
        description="Train every actor with the same launch recipe (recipes/openrlhf/*.sh), "
        "seed and step budget, then write one comparison: comparison.png (length, reward, "
        "</think> closure, KL per step, one line per actor), reward_by_length.png, "
        "comparison.json and comparison.md. Finished runs are reused; a failed run is "
        "reported in one line and the others go on (exit status 1 when any failed).")
    p.add_argument("recipe", help="launch recipe: a path or a name in recipes/openrlhf/")
    p.add_argument("--actor", action="append", default=[], metavar="NAME=PATH",
                   help="an actor to train (repeatable)")
    p.add_argument("--merge-recipe", type=Path, help="a merge_method: bai recipe for --alpha")
    p.add_argument("--alpha", help="alpha grid merged with bai-sweep, e.g. 0.1,0.5")
    p.add_argument("--weights", help="stage-1 weights for the grid (bai-sweep --weights)")
    p.add_argument("--out", type=Path, required=True, help="comparison folder (runs/, logs/)")
    p.add_argument("--steps", type=int, required=True, help="training steps per actor")
    p.add_argument("--seed", type=int, default=42, help="training seed of every run (42)")
    p.add_argument("--seeds", metavar="S[,S...]",
                   help="train every actor once per seed (the table gives mean and min-max)")
    p.add_argument("--actor-seeds", action="append", default=[], metavar="NAME=S[,S...]",
                   help="seeds of one actor, instead of --seeds (repeatable)")
    p.add_argument("--actor-env", action="append", default=[], metavar="NAME=KEY=VALUE",
                   help="a recipe variable for one actor only, e.g. NAME=CRITIC_INIT=path "
                   "(repeatable)")
    p.add_argument("--cpu", action="store_true",
                   help="CPU smoke mode of the recipe (CPU_SMOKE=1, bai-train --bai.cpu)")
    p.add_argument("--prompts", help="training prompts (PROMPT_DATA): JSONL or a dataset id")
    p.add_argument("--reward", help="reward function file (REWARD_PY)")
    p.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                   help="recipe environment variable, e.g. N_SAMPLES=4 (repeatable)")
    p.add_argument("--timeout", type=float, default=0.0,
                   help="seconds per run before it is stopped and reported failed (0: none)")
    g = p.add_argument_group("held-out accuracy of the trained actors (bai-probe)")
    g.add_argument("--heldout", type=Path, help="JSONL prompts with labels")
    g.add_argument("--eval-n", type=int, default=1, help="samples per prompt (1)")
    g.add_argument("--eval-max-tokens", type=int, default=256, help="generation limit (256)")
    g.add_argument("--eval-temperature", type=float, default=1.0,
                   help="sampling temperature (1.0, the rollout setting)")
    add_verbose(p)
    return p


def _check(args: argparse.Namespace) -> None:
    if args.steps < 1:
        raise UsageError(f"--steps must be >= 1, got {args.steps}")
    if bool(args.merge_recipe) != bool(args.alpha):
        raise UsageError("--merge-recipe and --alpha go together")
    if not args.actor and not args.merge_recipe:
        raise UsageError("give --actor NAME=PATH (repeatable) or --merge-recipe YAML --alpha")
    if args.merge_recipe and not args.merge_recipe.is_file():
        raise UsageError(f"--merge-recipe {args.merge_recipe}: no such file")
    if args.heldout and not args.heldout.is_file():
        raise UsageError(f"--heldout {args.heldout}: no such file")
    if args.out.exists() and not args.out.is_dir():
        raise UsageError(f"--out {args.out}: not a directory")


def _count_prompts(source: str, cwd: Path) -> int | None:
    path = Path(source) if Path(source).is_absolute() else cwd / source
    if not path.is_file():
        return None
    with open(path, encoding="utf-8", errors="replace") as fh:
        return sum(1 for line in fh if line.strip())


def _run(args: argparse.Namespace, extra: list[str]) -> int:
    _check(args)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    actors = [parse_actor(a) for a in args.actor]
    if args.merge_recipe:
        actors += sweep_actors(args.merge_recipe.resolve(), args.alpha, args.weights, out)
    names = [n for n, _ in actors]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise UsageError(f"actor names must be unique: {', '.join(dupes)}")
    prompts = args.prompts
    if prompts and Path(prompts).exists():
        prompts = str(Path(prompts).resolve())
    reward = str(Path(args.reward).resolve()) if args.reward else None
    plan = RunPlan(recipe=resolve_recipe(args.recipe), steps=args.steps, seed=args.seed,
                   cpu=args.cpu, prompts=prompts, reward=reward,
                   env=dict(parse_env(e) for e in args.env), extra_args=tuple(extra),
                   timeout=args.timeout or None)
    argv = dry_run_argv(plan, out)
    batch = flag_value(argv, "--rollout.batch_size")
    if batch is None or not batch.isdigit():
        raise BaiError(f"{plan.recipe}: cannot read --rollout.batch_size from its DRY_RUN argv")
    data = flag_value(argv, "--data.prompt_dataset") or ""
    count = _count_prompts(data, out)
    need = args.steps * int(batch)
    if count is not None and count < need:
        raise UsageError(f"{args.steps} steps of {batch} prompts need {need} prompts; "
                         f"{data} has {count}")
    specs = run_specs(actors, args)
    seeds = sorted({seed for *_, seed, _ in specs})
    _echo(f"{len(actors)} actor(s), {len(specs)} run(s), {plan.recipe.name}, {args.steps} steps "
          f"of {batch} prompts, seed(s) {','.join(map(str, seeds))}"
          f"{', CPU smoke mode' if args.cpu else ''}; output in {out}")
    results: list[RunResult] = []
    for index, (name, run, path, seed, env) in enumerate(specs, start=1):
        position = f"[{index}/{len(specs)}] "
        if path.startswith("/") and not os.path.exists(path):
            results.append(RunResult(run, path, out / "runs" / run, out / "logs" / f"{run}.log",
                                     ok=False, error=f"{path}: no such actor", actor_name=name,
                                     seed=seed))
            _echo(f"{position}{run}: FAILED: {path}: no such actor")
            continue
        run_plan = dataclasses.replace(plan, seed=seed, env={**plan.env, **env})
        result = train_actor(run, path, run_plan, out, budget_args(run_plan, int(batch)),
                             position, _echo)
        results.append(dataclasses.replace(result, actor_name=name, seed=seed))
    return write_comparison(results, args, plan, out)


def write_comparison(results: Sequence[RunResult], args: argparse.Namespace, plan: RunPlan,
                     out: Path) -> int:
    """comparison.json / .md / .png and reward_by_length.png (one row and one line per actor,
    its seeds aggregated); exit 1 when any run failed."""
    from bai_tools.compare_output import (
        aggregate,
        markdown_table,
        plot_buckets,
        plot_overlay,
        summarize_run,
    )
    from bai_tools.runlog import RunLogError, read_jsonl

    finished = [r for r in results if r.ok]
    accuracy = evaluate(finished, args, out) if args.heldout and finished else {}
    entries, logs = [], {}
    for r in results:
        entry: dict[str, Any] = {"name": r.name, "actor_name": r.actor_label, "seed": r.seed,
                                 "actor": r.actor, "ok": r.ok, "error": r.error,
                                 "run_dir": str(r.run_dir), "log": str(r.log),
                                 "reused": r.reused, "early_stop": r.early_stop,
                                 "seconds": round(r.seconds, 1)}
        if r.ok:
            try:
                run = read_jsonl(r.run_dir / "bai_metrics.jsonl", r.name)
            except RunLogError as exc:
                entry.update(ok=False, error=str(exc))
            else:
                summary = summarize_run(run)
                entry.update(summary, heldout_accuracy=accuracy.get(r.name))
                logs[r.name] = (run, summary)
        entries.append(entry)
    names = list(dict.fromkeys(e["actor_name"] for e in entries))
    actors = [aggregate(n, [e for e in entries if e["actor_name"] == n]) for n in names]
    report = {"tool": PROG, "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
              "settings": {"recipe": str(plan.recipe), "steps": plan.steps, "seed": plan.seed,
                           "seeds": sorted({e["seed"] for e in entries if e["seed"] is not None}),
                           "cpu": plan.cpu, "prompts": plan.prompts, "reward": plan.reward,
                           "env": dict(plan.env), "extra_args": list(plan.extra_args),
                           "heldout": str(args.heldout) if args.heldout else None},
              "actors": actors, "runs": entries}
    (out / "comparison.json").write_text(json.dumps(report, indent=1) + "\n")
    table = markdown_table(actors)
    seeds = ",".join(map(str, report["settings"]["seeds"])) or str(plan.seed)
    (out / "comparison.md").write_text(
        f"# bai-compare: {plan.recipe.name}, {plan.steps} steps, seed(s) {seeds}\n\n{table}")
    groups = [(n, [logs[e["name"]] for e in entries if e["actor_name"] == n
                   and e["name"] in logs]) for n in names]
    groups = [(n, [run for run, _ in g], [summary for _, summary in g]) for n, g in groups if g]
    if groups:
        plot_overlay(groups, out / "comparison.png")
        plot_buckets([(n, runs) for n, runs, _ in groups], out / "reward_by_length.png")
    print(table, end="")
    failed = [e for e in entries if not e["ok"]]
    for e in failed:
        _echo(f"{e['name']}: FAILED: {e['error']}")
    _echo(f"wrote {out / 'comparison.md'}, comparison.json"
          + (", comparison.png, reward_by_length.png" if groups else " (no finished run to plot)"))
    return 1 if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `bai-compare` (its arguments after `--` go to the recipe)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1:]
    return tool_main(PROG, build_parser(), lambda args: _run(args, extra), argv,
                     log_format="%(name)s: %(message)s")


if __name__ == "__main__":
    sys.exit(main())
