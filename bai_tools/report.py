"""`bai-report`: detect length collapse / reward hockey stick in training logs and plot them."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from bai_tools.events import DETECTORS, replay, tunable_params
from bai_tools.runlog import RunLog, RunLogError, load_runs

PROG = "bai-report"
LOG = logging.getLogger(__name__)


def fail(message: str) -> SystemExit:
    """A one-line error for the terminal, exit status 1."""
    return SystemExit(f"{PROG}: error: {message}")


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
            kwargs: dict[str, Any] = {"dest": f"{prefix}__{name}", "default": default,
                                      "help": f"default: {default}",
                                      "metavar": kind.__name__.upper()}
            if kind is bool:
                kwargs["type"] = lambda s: s.lower() in ("1", "true", "yes", "on")
            else:
                kwargs["type"] = kind
            group.add_argument(_flag(prefix, name), **kwargs)
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def detector_params(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """Detector constructor kwargs from the parsed flags."""
    params: dict[str, dict[str, Any]] = {}
    for section, (cls, _, prefix) in DETECTORS.items():
        params[section] = {
            name: getattr(args, f"{prefix}__{name}") for name in tunable_params(cls)
        }
    return params


def run_entry(run: RunLog, events: Mapping[str, Any]) -> dict[str, Any]:
    """One element of the `--json` output's "runs" list."""
    steps = run.steps
    return {
        "name": run.name,
        "source": str(run.source),
        "kind": run.kind,
        "steps": len(steps),
        "first_step": steps[0] if steps else None,
        "last_step": steps[-1] if steps else None,
        **events,
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


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `bai-report`."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING)
    params = detector_params(args)
    try:
        runs, report = build_report(args.runs, params)
    except ValueError as exc:  # a detector rejecting its thresholds
        raise fail(str(exc)) from None
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        print("\n".join(describe(e) for e in report["runs"]))
    sys.stdout.flush()
    if args.out:
        from bai_tools.plots import plot_report

        plot_report(runs, [{k: e[k] for k in DETECTORS} for e in report["runs"]], args.out)
        print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
