"""`bai-report`: detect length collapse / reward hockey stick in training logs and plot them."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from bai_core.config import DETECTOR_PARAMS, RULES, check_detector_kwargs
from bai_core.events import DETECTORS, replay, tunable_params
from bai_tools.cli_util import one_line, out_path_problem, run_guarded
from bai_tools.runlog import RunLog, RunLogError, load_runs

PROG = "bai-report"
LOG = logging.getLogger(__name__)
# report section -> detector kind in bai_core.config.check_detector_kwargs
_KINDS = {"length_collapse": "length", "reward_hockey_stick": "reward"}


def fail(message: str) -> SystemExit:
    """A one-line error for the terminal, exit status 1."""
    return SystemExit(one_line(PROG, message))


def check_out_path(path: Path, flag: str, suffixes: Sequence[str] = (".png",)) -> Path:
    """Refuse an output path before any work (see `cli_util.out_path_problem`)."""
    problem = out_path_problem(path, flag, suffixes)
    if problem:
        raise ValueError(problem)
    return Path(path)


def _flag(prefix: str, name: str) -> str:
    return f"--{prefix}-{name.replace('_', '-')}"


def build_parser() -> argparse.ArgumentParser:
    """Command-line interface; detector flags mirror the detector constructors' arguments."""
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Replay training curves (bai_metrics.jsonl or OpenRLHF TensorBoard logs) "
        "through the Sequence Length Collapse and Reward Hockey Stick detectors, print the "
        "events and plot the runs overlaid.",
    )
    p.add_argument("runs", nargs="+", metavar="RUN",
                   help="bai_metrics.jsonl, a folder holding it, or a TensorBoard log folder; "
                   "LABEL=PATH names the run")
    p.add_argument("--json", action="store_true", help="print the events as JSON")
    p.add_argument("--out", type=Path, help="write a PNG figure of the runs")
    for section, (cls, curve, prefix) in DETECTORS.items():
        group = p.add_argument_group(f"{cls.__name__} (watches {curve}; {section})")
        for name, (kind, default) in tunable_params(cls).items():
            rule = RULES[DETECTOR_PARAMS[_KINDS[section]][name]][2]
            kwargs: dict[str, Any] = {"dest": f"{prefix}__{name}", "default": default,
                                      "help": f"{rule}; default: {default}",
                                      "metavar": kind.__name__.upper()}
            if kind is bool:
                kwargs["type"] = lambda s: s.lower() in ("1", "true", "yes", "on")
            else:
                kwargs["type"] = kind
            group.add_argument(_flag(prefix, name), **kwargs)
    p.add_argument("-v", "--verbose", action="store_true",
                   help="INFO logging; tracebacks on errors (as BAI_TRACEBACK=1)")
    return p


def detector_params(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """Detector constructor kwargs from the parsed flags, checked by the rules `bai-train`
    applies (bai_core.config): ValueError naming the flag and the bad value."""
    params: dict[str, dict[str, Any]] = {}
    for section, (cls, _, prefix) in DETECTORS.items():
        names = list(tunable_params(cls))
        kwargs = {name: getattr(args, f"{prefix}__{name}") for name in names}
        flags = {name: _flag(prefix, name) for name in names}
        params[section] = check_detector_kwargs(_KINDS[section], kwargs, flags)
    return params


def run_entry(run: RunLog, events: Mapping[str, Any]) -> dict[str, Any]:
    """One element of the `--json` output's "runs" list; `warnings` gathers the log's data
    problems and every disagreement between the flags the run logged and the replay."""
    steps = run.steps
    warnings = list(run.warnings)
    warnings += [ev["disagreement"] for ev in events.values() if ev.get("disagreement")]
    return {
        "name": run.name,
        "source": str(run.source),
        "kind": run.kind,
        "steps": len(steps),
        "first_step": steps[0] if steps else None,
        "last_step": steps[-1] if steps else None,
        **events,
        "warnings": warnings,
    }


def describe(entry: Mapping[str, Any]) -> str:
    """Human-readable event lines for one run."""
    lc, hs = entry["length_collapse"], entry["reward_hockey_stick"]
    lines = [f"{entry['name']}  ({entry['kind']}: {entry['source']}; {entry['steps']} steps)"]
    if not lc["logged"]:
        text = "no response-length curve logged"
    elif lc["detected"]:
        rec = lc["recovered_step"]
        text = (
            f"DETECTED at step {lc['onset_step']}; minimum {lc['min_ratio']:.2f}x baseline at "
            f"step {lc['min_step']}; "
            + (f"recovered at step {rec}" if rec is not None else "not recovered")
        )
    else:
        text = f"not detected (minimum {lc['min_ratio']:.2f}x baseline)"
    if lc.get("seeded_from_step") is not None:
        text += f" (continued from the detector state logged at step {lc['seeded_from_step']})"
    lines.append(f"  Sequence Length Collapse [{lc['source_key']}]: {text}")
    if not hs["logged"]:
        text = "no reward curve logged"
    elif hs["detected"]:
        rec = hs["recovery_step"]
        text = (
            f"DIP at step {hs['onset_step']}; minimum at step {hs['min_step']} "
            f"(depth {hs['depth']:.4f}); "
            + (
                f"recovered at step {rec} ({hs.get('steps_to_recover')} steps to recover)"
                if rec is not None
                else "not recovered"
            )
        )
    else:
        text = "not detected"
    if hs.get("seeded_from_step") is not None:
        text += f" (continued from the detector state logged at step {hs['seeded_from_step']})"
    lines.append(f"  Reward Hockey Stick [{hs['source_key']}]: {text}")
    return "\n".join(lines)


def build_report(
    specs: Sequence[str], params: Mapping[str, Mapping[str, Any]] | None = None
) -> tuple[list[RunLog], dict[str, Any]]:
    """Load every RUN and replay it; returns the runs and the JSON-able report."""
    runs: list[RunLog] = []
    for spec in specs:
        try:
            runs.extend(load_runs(spec))
        except RunLogError as exc:
            raise fail(str(exc)) from None
    entries = [run_entry(run, replay(run, params)) for run in runs]
    return runs, {"runs": entries, "detector_params": {k: dict(v) for k, v in
                                                         (params or {}).items()}}


def _run(args: argparse.Namespace) -> int:
    params = detector_params(args)
    if args.out:
        check_out_path(args.out, "--out")
    runs, report = build_report(args.runs, params)
    for entry in report["runs"]:
        for warning in entry["warnings"]:
            print(f"{PROG}: warning: {warning}", file=sys.stderr)
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        print("\n".join(describe(e) for e in report["runs"]))
    sys.stdout.flush()
    if args.out:
        from bai_tools.plots import plot_report

        try:
            plot_report(runs, [{k: e[k] for k in DETECTORS} for e in report["runs"]], args.out)
        except OSError as exc:
            raise fail(f"--out {args.out}: cannot write ({exc.strerror or exc})") from None
        print(f"wrote {args.out}", file=sys.stderr)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `bai-report`: every failure ends in one `bai-report: error:` line
    (exit 1; usage errors exit 2); the traceback only with -v or BAI_TRACEBACK=1."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING)
    return run_guarded(PROG, lambda: _run(args), args.verbose,
                       expected=(RunLogError, ValueError, OSError))


if __name__ == "__main__":
    sys.exit(main())
