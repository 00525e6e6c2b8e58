"""Streaming O(1) detectors for Sequence Length Collapse and the Reward Hockey Stick."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from bai_core.config import LENGTH_FIELDS, REWARD_FIELDS, check_values

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


class _EpisodeDetector:
    """One episode (onset, minimum, recovery) over a smoothed curve against its baseline.

    The constructor takes BaiConfig field names (`fields`), checked by the config's rules
    (ValueError naming the flag). Non-finite values are ignored; after a recovery the
    detector does not re-arm.
    """

    LOG_PREFIX = ""
    FIELDS: tuple[str, ...] = ()

    def __init__(self, **kwargs: Any) -> None:
        unknown = set(kwargs) - set(self.FIELDS)
        if unknown:
            raise TypeError(f"unknown {type(self).__name__} argument(s) {sorted(unknown)}")
        if kwargs.get("collapse_max_onset_step", 0) is None:
            kwargs["collapse_max_onset_step"] = 0  # None: any step, as 0
        self.params = check_values(kwargs, style="tool")
        self._base = _Baseline(self.params["baseline_steps"], self.params["ema"])
        self.onset_step: int | None = None
        self.recovery_step: int | None = None
        self.min_value: float | None = None  # the watched value's minimum (ratio or reward)
        self.min_step: int | None = None

    @property
    def baseline(self) -> float | None:
        """Baseline mean, None until `baseline_steps` values were seen."""
        return self._base.mean if self._base.ready else None

    @property
    def active(self) -> bool:
        """True between onset and recovery."""
        return self.onset_step is not None and self.recovery_step is None

    def _low(self, step: int, value: float) -> None:
        if self.min_value is None or value < self.min_value:
            self.min_value, self.min_step = value, step

    def summary(self) -> dict[str, Any]:
        """detected, onset_step, min_value, min_step, recovery_step, steps_to_recover,
        baseline (plus the detector's own keys)."""
        return {
            "detected": self.onset_step is not None,
            "onset_step": self.onset_step,
            "min_value": self.min_value,
            "min_step": self.min_step,
            "recovery_step": self.recovery_step,
            "steps_to_recover": (None if self.recovery_step is None
                                 else self.recovery_step - self.onset_step),
            "baseline": self.baseline,
        }

    def state_dict(self) -> dict[str, Any]:
        return {"base": self._base.state(), "onset_step": self.onset_step,
                "recovery_step": self.recovery_step, "min_value": self.min_value,
                "min_step": self.min_step}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._base.load(state["base"])
        self.onset_step = state["onset_step"]
        self.recovery_step = state.get("recovery_step", state.get("recovered_step"))
        self.min_value = state.get("min_value", state.get("min_ratio"))
        self.min_step = state["min_step"]


class LengthCollapseDetector(_EpisodeDetector):
    """Fires when the smoothed mean response length drops below (1 - collapse_drop) x baseline.

    Baseline: mean of the first `baseline_steps` values. Smoothing: EMA with weight `ema` on
    the newest value (seeded with the first value). Onset: first step (after the baseline is
    complete and, when `collapse_max_onset_step` > 0, not later than it) with
    smoothed/baseline < 1 - collapse_drop. Recovery: first later step with smoothed/baseline
    >= `collapse_recover`. `min_value` is the minimum smoothed/baseline ratio.
    """

    LOG_PREFIX = "bai/detector/length_"
    FIELDS = LENGTH_FIELDS

    def __init__(self, collapse_drop: float = 0.5, collapse_recover: float = 0.9,
                 collapse_max_onset_step: int = 0, baseline_steps: int = 3,
                 ema: float = 0.5) -> None:
        super().__init__(collapse_drop=collapse_drop, collapse_recover=collapse_recover,
                         collapse_max_onset_step=collapse_max_onset_step,
                         baseline_steps=baseline_steps, ema=ema)
        self.drop = self.params["collapse_drop"]
        self.recover = self.params["collapse_recover"]
        self.max_onset_step = self.params["collapse_max_onset_step"]
        self.last_ratio: float | None = None

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
        self._low(step, ratio)
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
        elif self.recovery_step is None and ratio >= self.recover:
            self.recovery_step = step
            msgs.append(
                f"Sequence Length Collapse recovered at step {step}: smoothed length "
                f"{ratio:.2f}x baseline (onset step {self.onset_step}, "
                f"minimum {self.min_value:.2f}x at step {self.min_step})"
            )
        return msgs

    def summary(self) -> dict[str, Any]:
        """The shared keys, and min_ratio (1.0 when nothing was judged yet)."""
        out = super().summary()
        out["min_ratio"] = 1.0 if self.min_value is None else self.min_value
        return out

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "last_ratio": self.last_ratio}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.last_ratio = state.get("last_ratio")

    def logged_state(self) -> dict[str, float]:
        """What a report needs to continue this detector from a log row (keys without
        LOG_PREFIX; floats; unknown values left out): baseline, smoothed, onset_step,
        min_ratio, min_step, recovery_step."""
        return _logged(baseline=self.baseline, smoothed=self._base.smoothed,
                       onset_step=self.onset_step, min_ratio=self.min_value,
                       min_step=self.min_step, recovery_step=self.recovery_step)

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
        recovery = _step(state, "recovery_step")
        if recovery is None:
            recovery = _step(state, "recovered_step")  # logs written before 0.2
        self.recovery_step = recovery if known else None
        self.min_value = _get(state, "min_ratio")
        self.min_step = _step(state, "min_step")
        return True


class RewardHockeyStickDetector(_EpisodeDetector):
    """Fires when the smoothed reward dips clearly below its baseline; reports the recovery.

    Baseline: mean and sample std of the first `baseline_steps` values. A dip starts at the
    first later step where smoothed < baseline - margin, margin = max(reward_dip_std x std,
    reward_dip_rel x |baseline|, reward_dip_abs): both the std and the relative criterion must
    hold, since a std from 3 values is unreliable (and 0 for equal values). Recovery: the first
    later step with smoothed >= baseline. Depth = baseline - minimum smoothed reward in the dip.
    """

    LOG_PREFIX = "bai/detector/reward_"
    FIELDS = REWARD_FIELDS

    def __init__(self, reward_dip_std: float = 2.0, reward_dip_rel: float = 0.10,
                 reward_dip_abs: float = 0.0, baseline_steps: int = 3,
                 ema: float = 0.5) -> None:
        super().__init__(reward_dip_std=reward_dip_std, reward_dip_rel=reward_dip_rel,
                         reward_dip_abs=reward_dip_abs, baseline_steps=baseline_steps, ema=ema)
        self.std_mult = self.params["reward_dip_std"]
        self.rel_drop = self.params["reward_dip_rel"]
        self.abs_drop = self.params["reward_dip_abs"]

    @property
    def margin(self) -> float | None:
        base = self.baseline
        if base is None:
            return None
        return max(self.std_mult * self._base.std, self.rel_drop * abs(base), self.abs_drop)

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
            self._low(step, sm)
            if sm >= base:
                self.recovery_step = step
                msgs.append(
                    f"Reward Hockey Stick: reward recovered to baseline {base:.4f} at step "
                    f"{step} ({step - self.onset_step} steps after the dip onset at step "
                    f"{self.onset_step}; depth {base - self.min_value:.4f} at step {self.min_step})"
                )
        return msgs

    def summary(self) -> dict[str, Any]:
        """The shared keys, and depth / rel_depth of the dip (0.0 / None without one)."""
        out = super().summary()
        base = self.baseline
        depth = base - self.min_value if self.min_value is not None and base is not None else 0.0
        out["depth"] = depth
        out["rel_depth"] = depth / abs(base) if base else None
        return out

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
