"""Read training curves from bai_metrics.jsonl or an OpenRLHF TensorBoard log directory."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from bai_core.cli import iter_text_lines
from bai_core.constants import JSONL_NAME

TRAIN_PREFIX = "train/"

# Canonical curve -> log keys in order of preference (bai hooks first, OpenRLHF's own next).
# Keys are compared after removing OpenRLHF's TensorBoard prefix "train/".
CURVES: dict[str, tuple[str, ...]] = {
    "length_mean": ("bai/response_length/mean", "rollout/response_length_mean"),
    "length_p10": ("bai/response_length/p10",),
    "length_p90": ("bai/response_length/p90",),
    "clip_ratio": ("bai/response_length/clip_ratio", "rollout/truncated_rate"),
    "think_closed": ("bai/think/closed_ratio",),
    "reward_mean": ("bai/reward/mean", "rollout/reward_mean"),
}


KINDS = {type(None): "null", bool: "boolean", str: "string", list: "array", dict: "object"}


class RunLogError(ValueError):
    """A run log that is missing or malformed; the message names the file (and line)."""


@dataclass
class RunLog:
    """Scalar series of one training run: normalized key -> {step: value}."""

    name: str
    source: Path
    kind: str
    series: dict[str, dict[int, float]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def steps(self) -> list[int]:
        """Sorted union of the steps any series was logged at."""
        return sorted({s for values in self.series.values() for s in values})

    def curve_key(self, curve: str) -> str | None:
        """The log key that feeds a canonical curve, or None when the run lacks it."""
        return next((k for k in CURVES[curve] if self.series.get(k)), None)

    def curve(self, curve: str) -> tuple[list[int], list[float]]:
        """(steps, values) of a canonical curve, sorted by step; empty when not logged."""
        key = self.curve_key(curve)
        items = sorted(self.series[key].items()) if key is not None else []
        return [s for s, _ in items], [v for _, v in items]


def normalize_key(key: str) -> str:
    """Drop OpenRLHF's TensorBoard prefix so JSONL and TensorBoard keys compare equal."""
    return key.removeprefix(TRAIN_PREFIX)


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


class _Skipped(dict):
    """Per key: [count, first location, kinds] of values that are not finite numbers, for one
    warning line per key."""

    def add(self, key: str, value: object, where: str) -> None:
        entry = self.setdefault(key, [0, where, []])
        entry[0] += 1
        kind = (str(float(value)) if isinstance(value, int | float)  # nan, inf, -inf
                and not isinstance(value, bool) else KINDS.get(type(value), type(value).__name__))
        if kind not in entry[2]:
            entry[2].append(kind)

    def messages(self, source: Path, unit: str) -> list[str]:
        return [f"{source}: {key!r}: {count} {unit}{'s' if count > 1 else ''} with a value that "
                f"is not a finite number ({', '.join(kinds)}; first at {where}), ignored"
                for key, (count, where, kinds) in self.items()]


def read_jsonl(path: Path, name: str | None = None) -> RunLog:
    """Parse bai_metrics.jsonl: one object per step with an integer `step`; last write wins.
    Values that are not finite numbers are ignored with one warning per key in `warnings`."""
    run = RunLog(name or (path.parent.name if path.name == JSONL_NAME else path.stem), path,
                 "jsonl")
    skipped = _Skipped()
    for where, line in iter_text_lines(path, RunLogError):
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            if not line.endswith("\n") and run.series:
                # the last row of a run killed mid-write: keep what was logged before it
                run.warnings.append(f"{where}: skipping a partial last line")
                continue
            raise RunLogError(f"{where}: invalid JSON ({exc.msg})") from None
        if not isinstance(record, dict):
            raise RunLogError(f"{where}: expected a JSON object")
        step = record.get("step", record.get("global_step"))
        if isinstance(step, float) and step.is_integer():
            step = int(step)
        if not isinstance(step, int) or isinstance(step, bool):
            raise RunLogError(f"{where}: missing or non-integer 'step'")
        for key, raw in record.items():
            if key in ("step", "global_step"):
                continue
            value = _number(raw)
            if value is None:
                skipped.add(key, raw, f"line {where.rsplit(':', 1)[1]}")
            else:
                run.series.setdefault(normalize_key(key), {})[step] = value
    if not run.series:
        raise RunLogError(f"{path}: no metrics logged (empty file?)")
    run.warnings.extend(skipped.messages(path, "row"))
    return run


def read_tensorboard(log_dir: Path, name: str | None = None) -> RunLog:
    """Read every scalar tag of one TensorBoard run directory (OpenRLHF: prefix `train/`)."""
    try:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    except ImportError:
        raise RunLogError(f"{log_dir}: reading TensorBoard logs needs the `tensorboard` "
                          "package") from None

    acc = EventAccumulator(str(log_dir), size_guidance={"scalars": 0})
    try:
        acc.Reload()
    except Exception as exc:  # noqa: BLE001 - tensorboard raises assorted errors on bad files
        raise RunLogError(f"{log_dir}: unreadable TensorBoard events ({exc})") from None
    run = RunLog(name or log_dir.name, log_dir, "tensorboard")
    skipped = _Skipped()
    for tag in acc.Tags().get("scalars", []):
        for event in acc.Scalars(tag):
            value = _number(event.value)
            if value is None:
                skipped.add(tag, event.value, f"step {int(event.step)}")
            else:
                run.series.setdefault(normalize_key(tag), {})[int(event.step)] = value
    if not run.series:
        raise RunLogError(f"{log_dir}: no scalar metrics in the TensorBoard events")
    run.warnings.extend(skipped.messages(log_dir, "event"))
    return run


def load_runs(spec: str) -> list[RunLog]:
    """Load RUN: a JSONL file, a folder with bai_metrics.jsonl, or a TensorBoard log folder;
    `LABEL=PATH` names the run. A TensorBoard folder holding several run sub-folders (as
    OpenRLHF's `--logger.tensorboard_dir` does) yields one run per sub-folder."""
    label, path = None, Path(spec)
    if not path.exists() and "=" in spec:
        head, _, tail = spec.partition("=")
        label, path = head or None, Path(tail)
    if not path.exists():
        raise RunLogError(f"{path}: no such file or directory")
    if path.is_file():
        if path.name.startswith("events.out.tfevents."):
            return [read_tensorboard(path.parent, label)]
        return [read_jsonl(path, label)]
    if (path / JSONL_NAME).is_file():
        return [read_jsonl(path / JSONL_NAME, label or path.name)]
    dirs = sorted({p.parent for p in path.rglob("events.out.tfevents.*") if p.is_file()})
    if not dirs:
        raise RunLogError(f"{path}: neither {JSONL_NAME} nor TensorBoard event files found")
    if len(dirs) == 1:
        return [read_tensorboard(dirs[0], label or path.name)]
    return [read_tensorboard(d, f"{label or path.name}/{d.relative_to(path).as_posix()}")
            for d in dirs]
