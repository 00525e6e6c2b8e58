"""`bai-report`: detect length collapse / reward hockey stick in training logs and plot them."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from bai_core.cli import (
    SPELLED,
    add_verbose,
    check_out_path,
    deprecated_alias,
    tool_main,
    writing,
)
from bai_core.config import (
    LENGTH_FIELDS,
    REWARD_FIELDS,
    BaiConfig,
    add_options,
    flag,
    from_namespace,
)
from bai_core.constants import JSONL_NAME
from bai_core.events import DETECTORS, replay
from bai_tools.runlog import RunLog, load_runs

PROG = "bai-report"
# old per-detector flag spellings (hidden for one release) -> the BaiConfig field
OLD_FLAGS = {
    "--collapse-baseline-steps": "baseline_steps", "--collapse-ema": "ema",
    "--hockey-baseline-steps": "baseline_steps", "--hockey-ema": "ema",
    "--hockey-std-mult": "reward_dip_std", "--hockey-rel-drop": "reward_dip_rel",
    "--hockey-abs-drop": "reward_dip_abs",
}
STDOUT = "-"


def build_parser() -> argparse.ArgumentParser:
    """Command-line interface; detector flags are made from BaiConfig's fields."""
    p = argparse.ArgumentParser(
        prog=PROG,
        description=f"Replay training curves ({JSONL_NAME} or OpenRLHF TensorBoard logs) "
        "through the Sequence Length Collapse and Reward Hockey Stick detectors, print the "
        "events and plot the runs overlaid.",
    )
    p.add_argument("runs", nargs="+", metavar="RUN",
                   help=f"{JSONL_NAME}, a folder holding it, or a TensorBoard log folder; "
                   "LABEL=PATH names the run")
    p.add_argument("--json", nargs="?", const=STDOUT, metavar="FILE",
                   help="write the events as JSON to FILE (.json; `-` or no FILE: print them "
                   "instead of the text summary)")
    p.add_argument("--png", type=Path, metavar="FILE", help="write a PNG figure of the runs")
    deprecated_alias(p, "--out", "--png", "png", type=Path)
    group = p.add_argument_group("detector thresholds (as bai-train's --bai.* options)")
    add_options(group, style="tool", names=dict.fromkeys(LENGTH_FIELDS + REWARD_FIELDS))
    kinds = {name: type(getattr(BaiConfig(), name)) for name in OLD_FLAGS.values()}
    for old, name in OLD_FLAGS.items():
        deprecated_alias(group, old, flag(name, "tool"), name, type=kinds[name])
    add_verbose(p)
    return p


def run_entry(run: RunLog, events: Mapping[str, Any]) -> dict[str, Any]:
    """One element of the `--json` output's "runs" list; `warnings`: the log's data problems
    and every disagreement between the flags the run logged and the replay."""
    steps = run.steps or [None]
    return {
        "name": run.name, "source": str(run.source), "kind": run.kind,
        "steps": len(run.steps), "first_step": steps[0], "last_step": steps[-1], **events,
        "warnings": [*run.warnings, *(ev["disagreement"] for ev in events.values()
                                      if ev.get("disagreement"))],
    }


def _event_text(ev: Mapping[str, Any], what: str, found: str, minimum: str) -> str:
    """`found` (DETECTED/DIP), onset, minimum (`minimum` with {step}), recovery, provenance."""
    if not ev["logged"]:
        return f"no {what} curve logged"
    rec = ev["recovery_step"]
    if not ev["detected"]:
        text = "not detected" + (f" (minimum {ev['min_ratio']:.2f}x baseline)"
                                 if ev.get("min_ratio") is not None else "")
    else:
        onset = (f"before step {ev['onset_before_step']}"
                 if ev.get("onset_before_step") is not None else f"at step {ev['onset_step']}")
        text = f"{found} {onset}; {minimum.format(step=ev['min_step'])}; " + (
            "not recovered" if rec is None else f"recovered at step {rec}")
    if rec is not None and ev.get("steps_to_recover") is not None and what == "reward":
        text += f" ({ev['steps_to_recover']} steps to recover)"
    if ev.get("detected_from"):
        text += f" (from {ev['detected_from']})"
    if ev.get("seeded_from_step") is not None:
        text += f" (continued from the detector state logged at step {ev['seeded_from_step']})"
    return text


def describe(entry: Mapping[str, Any]) -> str:
    """Human-readable event lines for one run."""
    lc, hs = entry["length_collapse"], entry["reward_hockey_stick"]
    ratio = "minimum at step {step}" if lc.get("min_ratio") is None else (
        f"minimum {lc['min_ratio']:.2f}x baseline at step {{step}}")
    depth = "minimum at step {step}" + (
        "" if hs.get("depth") is None else f" (depth {hs['depth']:.4f})")
    return "\n".join([
        f"{entry['name']}  ({entry['kind']}: {entry['source']}; {entry['steps']} steps)",
        f"  Sequence Length Collapse [{lc['source_key']}]: "
        + _event_text(lc, "response-length", "DETECTED", ratio),
        f"  Reward Hockey Stick [{hs['source_key']}]: "
        + _event_text(hs, "reward", "DIP", depth),
    ])


def build_report(specs: Sequence[str],
                 config: BaiConfig | None = None) -> tuple[list[RunLog], dict[str, Any]]:
    """Load every RUN and replay it; returns the runs and the JSON-able report."""
    runs = [run for spec in specs for run in load_runs(spec)]
    config = config or BaiConfig()
    entries = [run_entry(run, replay(run, config)) for run in runs]
    params = {section: config.detector_kwargs(cls.FIELDS)
              for section, (cls, _) in DETECTORS.items()}
    return runs, {"runs": entries, "detector_params": params}


def _run(args: argparse.Namespace) -> int:
    typed = getattr(args, SPELLED, None) or {}  # dest -> an old spelling the user typed
    config = from_namespace(args)
    config.validate("tool", typed)  # bai-train's rules, naming the flag as typed
    if args.json != STDOUT:
        check_out_path(args.json and Path(args.json), "--json", (".json",))
    check_out_path(args.png, typed.get("png", "--png"), (".png",))
    runs, report = build_report(args.runs, config)
    for entry in report["runs"]:
        for warning in entry["warnings"]:
            print(f"{PROG}: warning: {warning}", file=sys.stderr)
    text = json.dumps(report, indent=1)
    print(text if args.json == STDOUT else "\n".join(describe(e) for e in report["runs"]),
          flush=True)
    if args.json not in (None, STDOUT):
        with writing("--json", Path(args.json)) as path:
            path.write_text(text + "\n", encoding="utf-8")
    if args.png:
        from bai_tools.plots import plot_report

        with writing(typed.get("png", "--png"), args.png) as path:
            plot_report(runs, [{k: e[k] for k in DETECTORS} for e in report["runs"]], path)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `bai-report` (errors: bai_core.cli's one-line convention)."""
    return tool_main(PROG, build_parser(), _run, argv)


if __name__ == "__main__":
    sys.exit(main())
