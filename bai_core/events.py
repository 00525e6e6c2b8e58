"""Replay logged curves through the training-time detectors (bai_core.detectors)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Protocol

from bai_core.config import BaiConfig
from bai_core.detectors import LengthCollapseDetector, RewardHockeyStickDetector


class RunLog(Protocol):
    """What replay reads from a run's log (bai_tools.runlog.RunLog fits)."""

    name: str
    series: dict[str, dict[int, float]]

    def curve(self, curve: str) -> tuple[list[int], list[float]]: ...

    def curve_key(self, curve: str) -> str | None: ...


# report section -> (detector class, curve it watches)
DETECTORS: dict[str, tuple[type, str]] = {
    "length_collapse": (LengthCollapseDetector, "length_mean"),
    "reward_hockey_stick": (RewardHockeyStickDetector, "reward_mean"),
}
# report section -> the 0/1 flag the training hooks log for it (1 while the episode is open)
LOGGED_FLAGS: dict[str, str] = {
    "length_collapse": "bai/detector/length_collapse",
    "reward_hockey_stick": "bai/detector/reward_dip",
}
CONTRACT_KEYS: dict[str, tuple[str, ...]] = {
    "length_collapse": ("detected", "onset_step", "min_ratio", "min_step", "recovery_step"),
    "reward_hockey_stick": ("detected", "onset_step", "min_step", "depth", "recovery_step"),
}


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
    for key in ("onset_step", "min_step", "recovery_step", "steps_to_recover"):
        if out.get(key) is not None:
            out[key] = int(out[key])
    # The contract types these as floats: "nothing seen" is ratio 1.0 / depth 0.0.
    for key, neutral in (("min_ratio", 1.0), ("depth", 0.0)):
        if key in out:  # contract keys are in by now
            out[key] = neutral if out.get(key) is None else float(out[key])
    return out


def logged_state(run: RunLog, prefix: str, step: int) -> dict[str, float]:
    """Detector state the training hooks logged at `step` (keys without `prefix`)."""
    return {key[len(prefix):]: values[step] for key, values in run.series.items()
            if key.startswith(prefix) and step in values}


def _disagreement(section: str, run: RunLog, active: Mapping[int, bool]) -> str | None:
    """One line when the flag the run logged differs from the replay at some step."""
    logged = run.series.get(LOGGED_FLAGS[section], {})
    bad = [s for s in sorted(active) if s in logged and (logged[s] >= 0.5) != active[s]]
    if not bad:
        return None
    first = bad[0]
    return (
        f"{run.name}: {section}: the run logged {LOGGED_FLAGS[section]} = {logged[first]:g} "
        f"at step {first} but this replay says {int(active[first])} ({len(bad)} of "
        f"{sum(s in logged for s in active)} logged steps disagree; the training may have "
        "used other thresholds than this report)"
    )


def _from_logged_flag(section: str, run: RunLog, steps: list[int],
                      values: list[float]) -> dict[str, Any] | None:
    """The episode as the run itself logged it, for a log that starts inside an episode (its
    first row has the detector's flag at 1) without the state to replay from (an older log, a
    log begun after a resume): `onset_step` None, `onset_before_step` (the first step) and
    `detected_from` (why); minimum and recovery from the flags (the minimum ratio from the
    logged smoothed ratio, where there is one)."""
    flags = run.series.get(LOGGED_FLAGS[section], {})
    if not steps or flags.get(steps[0], 0.0) < 0.5:
        return None
    first = steps[0]
    recovery = next((s for s in steps if s in flags and flags[s] < 0.5), None)
    during = [(v, s) for s, v in zip(steps, values, strict=True)
              if recovery is None or s < recovery]
    low, low_step = min(during)
    out = {"detected": True, "onset_step": None, "onset_before_step": first,
           "min_step": low_step, "recovery_step": recovery, "steps_to_recover": None,
           "min_value": low, "depth": None, "rel_depth": None, "baseline": None,
           "detected_from": f"the run's own {LOGGED_FLAGS[section]} = 1 at its first row "
                            f"(step {first}), with no detector state logged to continue from"}
    if section == "length_collapse":
        ratios = run.series.get("bai/detector/length_ratio_smoothed", {})
        ratio = min((ratios[s] for _, s in during if s in ratios), default=None)
        out.update(min_ratio=ratio, min_value=ratio)
    return out


def replay(run: RunLog, config: BaiConfig | None = None) -> dict[str, dict[str, Any]]:
    """Feed each watched curve step by step to a detector; return their summaries.

    The detector starts fresh, or, when the curve's first row carries the detector state the
    training hooks log (a complete baseline, as in a resumed run's log), continues from it.
    Each summary adds `logged` (the curve exists), `source_key` (the log key), `warnings` (the
    detector's messages), `seeded_from_step` (the row whose state was used, or None),
    `logged_agrees` (the run's logged flag matches the replay at every step; None without a
    flag) and, when not, `disagreement` (one line). A log that starts inside a logged episode,
    with no state to continue from, reports that episode (see `_from_logged_flag`).
    """
    config = config or BaiConfig()
    events: dict[str, dict[str, Any]] = {}
    for section, (cls, curve) in DETECTORS.items():
        detector = cls(**config.detector_kwargs(cls.FIELDS))
        steps, values = run.curve(curve)
        warnings: list[str] = []
        active: dict[int, bool] = {}
        seeded = None
        if steps and detector.load_logged_state(logged_state(run, cls.LOG_PREFIX, steps[0])):
            seeded = steps[0]
            active[seeded] = detector.active
            steps, values = steps[1:], values[1:]
        for step, value in zip(steps, values, strict=True):
            warnings.extend(detector.update(step, value))
            active[step] = detector.active
        episode = None if seeded is not None else _from_logged_flag(section, run, *run.curve(curve))
        if episode:
            warnings = []  # the fresh replay's baseline came from steps inside the episode
        summary = _normalize(section, {**detector.summary(), **(episode or {})})
        summary.update(logged=bool(active), source_key=run.curve_key(curve), warnings=warnings,
                       seeded_from_step=seeded)
        disagreement = None if episode else _disagreement(section, run, active)
        flag_logged = bool(run.series.get(LOGGED_FLAGS[section]))
        summary["logged_agrees"] = (disagreement is None) if flag_logged else None
        if disagreement:
            summary["disagreement"] = disagreement
        events[section] = summary
    return events
