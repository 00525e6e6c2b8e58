"""Replay logged curves through the training-time detectors (openrlhf_patches.detectors)."""

from __future__ import annotations

import inspect
import math
from collections.abc import Mapping
from typing import Any

from bai_tools.runlog import RunLog
from openrlhf_patches.detectors import LengthCollapseDetector, RewardHockeyStickDetector

# report section -> (detector class, curve it watches, CLI flag prefix)
DETECTORS: dict[str, tuple[type, str, str]] = {
    "length_collapse": (LengthCollapseDetector, "length_mean", "collapse"),
    "reward_hockey_stick": (RewardHockeyStickDetector, "reward_mean", "hockey"),
}
CONTRACT_KEYS: dict[str, tuple[str, ...]] = {
    "length_collapse": ("detected", "onset_step", "min_ratio", "min_step", "recovered_step"),
    "reward_hockey_stick": ("detected", "onset_step", "min_step", "depth", "recovery_step"),
}


def tunable_params(cls: type) -> dict[str, tuple[type, Any]]:
    """Threshold parameters of a detector constructor: name -> (type, default).

    Keyword parameters with a bool/int/float default, or a None default annotated as an
    optional int/float (e.g. `max_onset_step: int | None = None`).
    """
    params: dict[str, tuple[type, Any]] = {}
    for p in inspect.signature(cls).parameters.values():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) or p.default is p.empty:
            continue
        if isinstance(p.default, bool | int | float):
            params[p.name] = (type(p.default), p.default)
        elif p.default is None:
            note = p.annotation if isinstance(p.annotation, str) else str(p.annotation)
            for kind in (int, float):
                if kind.__name__ in note:
                    params[p.name] = (kind, None)
                    break
    return params


def _clean(value: Any) -> Any:
    """JSON-safe: numpy/torch scalars to Python, non-finite floats to None."""
    if hasattr(value, "item") and callable(value.item):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _normalize(section: str, summary: Mapping[str, Any]) -> dict[str, Any]:
    out = {k: _clean(v) for k, v in summary.items()}
    for key in CONTRACT_KEYS[section]:
        out.setdefault(key, None)
    out["detected"] = bool(out["detected"])
    for key in ("onset_step", "min_step", "recovered_step", "recovery_step", "steps_to_recover"):
        if out.get(key) is not None:
            out[key] = int(out[key])
    # The contract types these as floats: "nothing seen" is ratio 1.0 / depth 0.0.
    for key, neutral in (("min_ratio", 1.0), ("depth", 0.0)):
        if key in out or key in CONTRACT_KEYS[section]:
            out[key] = neutral if out.get(key) is None else float(out[key])
    return out


def replay(
    run: RunLog, params: Mapping[str, Mapping[str, Any]] | None = None
) -> dict[str, dict[str, Any]]:
    """Feed each watched curve step by step to a fresh detector; return their summaries.

    Each summary gets `logged` (whether the curve exists), `source_key` (the log key used)
    and `warnings` (the detector's messages, in order).
    """
    params = params or {}
    events: dict[str, dict[str, Any]] = {}
    for section, (cls, curve, _) in DETECTORS.items():
        detector = cls(**dict(params.get(section, {})))
        steps, values = run.curve(curve)
        warnings: list[str] = []
        for step, value in zip(steps, values, strict=True):
            warnings.extend(detector.update(step, value))
        summary = _normalize(section, detector.summary())
        summary["logged"] = bool(steps)
        summary["source_key"] = run.curve_key(curve)
        summary["warnings"] = warnings
        events[section] = summary
    return events
