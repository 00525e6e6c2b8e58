"""Streaming O(1) detectors for Sequence Length Collapse and the Reward Hockey Stick."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from bai_core.config import check_detector_kwargs

__all__ = ["LengthCollapseDetector", "RewardHockeyStickDetector"]


class _Baseline:
    """Mean/std of the first `steps` values, then an EMA of every value (O(1) state)."""

    def __init__(self, steps: int, ema: float) -> None:
        self.steps = steps
        self.ema = ema
        self.n = 0
        self.total = 0.0
        self.total_sq = 0.0
        self.smoothed: float | None = None

    def add(self, value: float) -> None:
        if self.n < self.steps:
            self.n += 1
            self.total += value
            self.total_sq += value * value
        if self.smoothed is None:
            self.smoothed = value
        else:
            self.smoothed = self.ema * value + (1.0 - self.ema) * self.smoothed

    @property
    def ready(self) -> bool:
        return self.n >= self.steps

    @property
    def mean(self) -> float | None:
        return self.total / self.n if self.n else None

    @property
    def std(self) -> float:
        """Sample std (n-1) of the baseline values; 0 for a single value."""
        if self.n < 2:
            return 0.0
        var = (self.total_sq - self.total * self.total / self.n) / (self.n - 1)
        return math.sqrt(max(var, 0.0))

    def state(self) -> dict[str, Any]:
        return {"n": self.n, "total": self.total, "total_sq": self.total_sq,
                "smoothed": self.smoothed}

    def load(self, state: dict[str, Any]) -> None:
        self.n = int(state["n"])
        self.total = float(state["total"])
        self.total_sq = float(state["total_sq"])
        sm = state["smoothed"]
        self.smoothed = None if sm is None else float(sm)

    def seed(self, mean: float, std: float, smoothed: float) -> None:
        """A complete baseline with this mean and sample std, and this smoothed value."""
        self.n = self.steps
        self.total = mean * self.steps
        var = std * std * (self.steps - 1) if self.steps > 1 else 0.0
        self.total_sq = var + self.total * self.total / self.steps
        self.smoothed = smoothed


def _logged(**values: float | int | None) -> dict[str, float]:
    """Floats for a metrics logger; unknown (None / non-finite) values are left out."""
    return {k: float(v) for k, v in values.items() if v is not None and math.isfinite(v)}


def _get(state: Mapping[str, Any], key: str) -> float | None:
    value = state.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def _step(state: Mapping[str, Any], key: str) -> int | None:
    value = _get(state, key)
    return None if value is None else int(value)


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


class LengthCollapseDetector:
    """Fires when the smoothed mean response length drops below (1 - drop) x baseline.

    Baseline: mean of the first `baseline_steps` values. Smoothing: EMA with weight `ema` on
    the newest value (seeded with the first value). Onset: first step (after the baseline is
    complete and, when `max_onset_step` > 0, not later than it; 0 = any step) with
    smoothed/baseline < 1 - drop. Recovery: first later step with smoothed/baseline >=
    `recover` (>= 1 - drop). One episode is tracked: after a recovery the detector does not
    re-arm. Non-finite values are ignored. Thresholds are checked by
    `bai_core.config.check_detector_kwargs` (ValueError naming the argument).
    """

    LOG_PREFIX = "bai/detector/length_"

    def __init__(
        self,
        drop: float = 0.5,
        baseline_steps: int = 3,
        ema: float = 0.5,
        recover: float = 0.9,
        max_onset_step: int = 0,
    ) -> None:
        kw = check_detector_kwargs("length", {
            "drop": drop, "baseline_steps": baseline_steps, "ema": ema, "recover": recover,
            "max_onset_step": max_onset_step})
        self.drop = kw["drop"]
        self.recover = kw["recover"]
        self.max_onset_step = kw["max_onset_step"]
        self._base = _Baseline(kw["baseline_steps"], kw["ema"])
        self.onset_step: int | None = None
        self.recovered_step: int | None = None
        self.min_ratio: float | None = None
        self.min_step: int | None = None
        self.last_ratio: float | None = None

    @property
    def baseline(self) -> float | None:
        """Baseline mean length, None until `baseline_steps` values were seen."""
        return self._base.mean if self._base.ready else None

    @property
    def active(self) -> bool:
        """True between onset and recovery."""
        return self.onset_step is not None and self.recovered_step is None

    def update(self, step: int, value: float) -> list[str]:
        """Feed the mean response length of `step`; return newly triggered warnings."""
        if not _finite(value):
            return []
        was_ready = self._base.ready
        self._base.add(float(value))
        base = self._base.mean
        if not was_ready or not base or base <= 0:
            return []
        ratio = self._base.smoothed / base
        self.last_ratio = ratio
        if self.min_ratio is None or ratio < self.min_ratio:
            self.min_ratio, self.min_step = ratio, step
        msgs: list[str] = []
        if self.onset_step is None:
            early = self.max_onset_step == 0 or step <= self.max_onset_step
            if early and ratio < 1.0 - self.drop:
                self.onset_step = step
                msgs.append(
                    f"Sequence Length Collapse at step {step}: smoothed mean response length "
                    f"{self._base.smoothed:.1f} is {ratio:.2f}x its baseline {base:.1f} "
                    f"(threshold {1.0 - self.drop:.2f}x)"
                )
        elif self.recovered_step is None and ratio >= self.recover:
            self.recovered_step = step
            msgs.append(
                f"Sequence Length Collapse recovered at step {step}: smoothed length "
                f"{ratio:.2f}x baseline (onset step {self.onset_step}, "
                f"minimum {self.min_ratio:.2f}x at step {self.min_step})"
            )
        return msgs

    def summary(self) -> dict[str, Any]:
        return {
            "detected": self.onset_step is not None,
            "onset_step": self.onset_step,
            "min_ratio": 1.0 if self.min_ratio is None else self.min_ratio,
            "min_step": self.min_step,
            "recovered_step": self.recovered_step,
            "baseline": self.baseline,
        }

    def state_dict(self) -> dict[str, Any]:
        return {
            "base": self._base.state(),
            "onset_step": self.onset_step,
            "recovered_step": self.recovered_step,
            "min_ratio": self.min_ratio,
            "min_step": self.min_step,
            "last_ratio": self.last_ratio,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._base.load(state["base"])
        self.onset_step = state["onset_step"]
        self.recovered_step = state["recovered_step"]
        self.min_ratio = state["min_ratio"]
        self.min_step = state["min_step"]
        self.last_ratio = state.get("last_ratio")

    def logged_state(self) -> dict[str, float]:
        """What a report needs to continue this detector from a log row (keys without
        LOG_PREFIX; floats; unknown values left out): baseline, smoothed, onset_step,
        min_ratio, min_step, recovered_step."""
        return _logged(baseline=self.baseline, smoothed=self._base.smoothed,
                       onset_step=self.onset_step, min_ratio=self.min_ratio,
                       min_step=self.min_step, recovered_step=self.recovered_step)

    def load_logged_state(self, state: Mapping[str, Any]) -> bool:
        """Continue from `logged_state()` values (e.g. a resumed run's first log row); False,
        and no change, when they hold no complete baseline."""
        base, smoothed = _get(state, "baseline"), _get(state, "smoothed")
        if base is None or smoothed is None:
            return False
        self._base.seed(base, 0.0, smoothed)
        self.last_ratio = smoothed / base if base > 0 else None
        self.onset_step = _step(state, "onset_step")
        known = self.onset_step is not None
        self.recovered_step = _step(state, "recovered_step") if known else None
        self.min_ratio = _get(state, "min_ratio")
        self.min_step = _step(state, "min_step")
        return True


class RewardHockeyStickDetector:
    """Fires when the smoothed reward dips clearly below its baseline; reports the recovery.

    Baseline: mean and sample std of the first `baseline_steps` values. A dip starts at the
    first later step where smoothed < baseline - margin, margin = max(std_mult x std,
    rel_drop x |baseline|, abs_drop): both the std and the relative criterion must hold, since
    a std from 3 values is unreliable (and 0 for equal values). Recovery: the first later step
    with smoothed >= baseline. Depth = baseline - minimum smoothed reward during the dip. One
    episode is tracked; non-finite values are ignored.
    """

    LOG_PREFIX = "bai/detector/reward_"

    def __init__(
        self,
        baseline_steps: int = 3,
        std_mult: float = 2.0,
        rel_drop: float = 0.10,
        ema: float = 0.5,
        abs_drop: float = 0.0,
    ) -> None:
        kw = check_detector_kwargs("reward", {
            "baseline_steps": baseline_steps, "std_mult": std_mult, "rel_drop": rel_drop,
            "ema": ema, "abs_drop": abs_drop})
        self.std_mult = kw["std_mult"]
        self.rel_drop = kw["rel_drop"]
        self.abs_drop = kw["abs_drop"]
        self._base = _Baseline(kw["baseline_steps"], kw["ema"])
        self.onset_step: int | None = None
        self.recovery_step: int | None = None
        self.min_value: float | None = None
        self.min_step: int | None = None

    @property
    def baseline(self) -> float | None:
        return self._base.mean if self._base.ready else None

    @property
    def margin(self) -> float | None:
        base = self.baseline
        if base is None:
            return None
        return max(self.std_mult * self._base.std, self.rel_drop * abs(base), self.abs_drop)

    @property
    def active(self) -> bool:
        return self.onset_step is not None and self.recovery_step is None

    def update(self, step: int, value: float) -> list[str]:
        """Feed the mean reward of `step`; return newly triggered warnings."""
        if not _finite(value):
            return []
        was_ready = self._base.ready
        self._base.add(float(value))
        if not was_ready:
            return []
        base, margin, sm = self._base.mean, self.margin, self._base.smoothed
        msgs: list[str] = []
        if self.onset_step is None:
            if sm < base - margin:
                self.onset_step = step
                self.min_value, self.min_step = sm, step
                msgs.append(
                    f"Reward dip at step {step}: smoothed reward {sm:.4f} is below baseline "
                    f"{base:.4f} by more than {margin:.4f}"
                )
        elif self.recovery_step is None:
            if sm < self.min_value:
                self.min_value, self.min_step = sm, step
            if sm >= base:
                self.recovery_step = step
                msgs.append(
                    f"Reward Hockey Stick: reward recovered to baseline {base:.4f} at step "
                    f"{step} ({step - self.onset_step} steps after the dip onset at step "
                    f"{self.onset_step}; depth {base - self.min_value:.4f} at step {self.min_step})"
                )
        return msgs

    def summary(self) -> dict[str, Any]:
        base = self.baseline
        depth = 0.0
        if self.min_value is not None and base is not None:
            depth = base - self.min_value
        return {
            "detected": self.onset_step is not None,
            "onset_step": self.onset_step,
            "min_step": self.min_step,
            "depth": depth,
            "rel_depth": depth / abs(base) if base else None,
            "recovery_step": self.recovery_step,
            "steps_to_recover": (
                None if self.recovery_step is None else self.recovery_step - self.onset_step
            ),
            "baseline": base,
        }

    def state_dict(self) -> dict[str, Any]:
        return {
            "base": self._base.state(),
            "onset_step": self.onset_step,
            "recovery_step": self.recovery_step,
            "min_value": self.min_value,
            "min_step": self.min_step,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._base.load(state["base"])
        self.onset_step = state["onset_step"]
        self.recovery_step = state["recovery_step"]
        self.min_value = state["min_value"]
        self.min_step = state["min_step"]

    def logged_state(self) -> dict[str, float]:
        """What a report needs to continue this detector from a log row (keys without
        LOG_PREFIX; floats; unknown values left out): baseline, baseline_std, smoothed,
        onset_step, min (smoothed minimum during the dip), min_step, recovery_step."""
        ready = self._base.ready
        return _logged(baseline=self.baseline, baseline_std=self._base.std if ready else None,
                       smoothed=self._base.smoothed, onset_step=self.onset_step,
                       min=self.min_value, min_step=self.min_step,
                       recovery_step=self.recovery_step)

    def load_logged_state(self, state: Mapping[str, Any]) -> bool:
        """Continue from `logged_state()` values; False, and no change, without a baseline."""
        base, smoothed = _get(state, "baseline"), _get(state, "smoothed")
        if base is None or smoothed is None:
            return False
        self._base.seed(base, _get(state, "baseline_std") or 0.0, smoothed)
        self.onset_step = _step(state, "onset_step")
        known = self.onset_step is not None
        self.recovery_step = _step(state, "recovery_step") if known else None
        self.min_value = _get(state, "min") if known else None
        self.min_step = _step(state, "min_step") if known else None
        if known and self.min_value is None:
            self.min_value, self.min_step = smoothed, self.onset_step
        return True
