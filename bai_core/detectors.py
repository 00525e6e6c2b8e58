"""Streaming O(1) detectors for Sequence Length Collapse and the Reward Hockey Stick."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from bai_core.config import LENGTH_FIELDS, REWARD_FIELDS, BaiConfig, check_values

__all__ = ["LengthCollapseDetector", "RewardHockeyStickDetector"]


class _Baseline:
    """Mean/std of the first `steps` values, then an EMA of every value (O(1) state)."""

    def __init__(self, steps: int, ema: float) -> None:
        self.steps, self.ema = steps, ema
        self.n, self.total, self.total_sq = 0, 0.0, 0.0
        self.smoothed: float | None = None

    def add(self, value: float) -> None:
        if self.n < self.steps:
            self.n += 1
            self.total += value
            self.total_sq += value * value
        self.smoothed = value if self.smoothed is None else (
            self.ema * value + (1.0 - self.ema) * self.smoothed)

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
        return math.sqrt(max((self.total_sq - self.total ** 2 / self.n) / (self.n - 1), 0.0))

    def state(self) -> dict[str, Any]:
        return {"n": self.n, "total": self.total, "total_sq": self.total_sq,
                "smoothed": self.smoothed}

    def load(self, state: dict[str, Any]) -> None:
        self.n, self.total, self.total_sq = (int(state["n"]), float(state["total"]),
                                             float(state["total_sq"]))
        self.smoothed = None if state["smoothed"] is None else float(state["smoothed"])

    def seed(self, mean: float, std: float, smoothed: float) -> None:
        """A complete baseline with this mean and sample std, and this smoothed value."""
        self.n = self.steps
        self.total = mean * self.steps
        var = std * std * (self.steps - 1) if self.steps > 1 else 0.0
        self.total_sq = var + self.total * self.total / self.steps
        self.smoothed = smoothed


def _get(state: Mapping[str, Any], key: str, kind: type = float) -> Any:
    """`state[key]` as `kind` if a finite number, else None (missing, bool, non-finite)."""
    value = state.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return kind(float(value))


class _EpisodeDetector:
    """One episode (onset, minimum, recovery) over a smoothed curve against its baseline.

    Takes BaiConfig field names (`FIELDS`, defaults from BaiConfig), checked by the config's
    rules (ValueError naming the flag). Non-finite values are ignored; after a recovery the
    detector does not re-arm.
    """

    LOG_PREFIX = ""
    FIELDS: tuple[str, ...] = ()
    MIN_KEY = "min"  # the logged state's key of the minimum
    LOG_STD = True  # log the baseline std (the reward margin uses it)

    def __init__(self, **kwargs: Any) -> None:
        unknown = set(kwargs) - set(self.FIELDS)
        if unknown:
            raise TypeError(f"unknown {type(self).__name__} argument(s) {sorted(unknown)}")
        if kwargs.get("collapse_max_onset_step", 0) is None:
            kwargs["collapse_max_onset_step"] = 0  # None: any step, as 0
        defaults = BaiConfig().detector_kwargs(self.FIELDS)
        self.params = check_values({**defaults, **kwargs}, style="tool")
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

    def update(self, step: int, value: float) -> list[str]:
        """Feed the watched value of `step`; return newly triggered warnings."""
        if value is None or not math.isfinite(value):
            return []
        was_ready = self._base.ready
        self._base.add(float(value))
        return self._judge(step) if was_ready else []

    def _judge(self, step: int) -> list[str]:
        raise NotImplementedError

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

    def logged_state(self) -> dict[str, float]:
        """What a report needs to continue this detector from a log row (keys without
        LOG_PREFIX; floats; unknown values left out)."""
        log_std = self._base.ready and self.LOG_STD
        values = {"baseline": self.baseline, "baseline_std": self._base.std if log_std else None,
                  "smoothed": self._base.smoothed, "onset_step": self.onset_step,
                  self.MIN_KEY: self.min_value, "min_step": self.min_step,
                  "recovery_step": self.recovery_step}
        return {k: float(v) for k, v in values.items() if v is not None and math.isfinite(v)}

    def load_logged_state(self, state: Mapping[str, Any]) -> bool:
        """Continue from `logged_state()` values (e.g. a resumed run's first log row); False,
        and no change, when they hold no complete baseline."""
        base, smoothed = _get(state, "baseline"), _get(state, "smoothed")
        if base is None or smoothed is None:
            return False
        self._base.seed(base, _get(state, "baseline_std") or 0.0, smoothed)
        self.onset_step = _get(state, "onset_step", int)
        recovery = _get(state, "recovery_step", int)
        if recovery is None:
            recovery = _get(state, "recovered_step", int)  # logs written before 0.2
        self.recovery_step = recovery if self.onset_step is not None else None
        self.min_value, self.min_step = _get(state, self.MIN_KEY), _get(state, "min_step", int)
        return True


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
    MIN_KEY = "min_ratio"
    LOG_STD = False

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.drop = self.params["collapse_drop"]
        self.recover = self.params["collapse_recover"]
        self.max_onset_step = self.params["collapse_max_onset_step"]
        self.last_ratio: float | None = None

    def _judge(self, step: int) -> list[str]:
        base = self._base.mean
        if not base or base <= 0:
            return []
        ratio = self.last_ratio = self._base.smoothed / base
        self._low(step, ratio)
        if self.onset_step is None:
            early = self.max_onset_step == 0 or step <= self.max_onset_step
            if early and ratio < 1.0 - self.drop:
                self.onset_step = step
                return [f"Sequence Length Collapse at step {step}: smoothed mean response length "
                        f"{self._base.smoothed:.1f} is {ratio:.2f}x its baseline {base:.1f} "
                        f"(threshold {1.0 - self.drop:.2f}x)"]
        elif self.recovery_step is None and ratio >= self.recover:
            self.recovery_step = step
            return [f"Sequence Length Collapse recovered at step {step}: smoothed length "
                    f"{ratio:.2f}x baseline (onset step {self.onset_step}, "
                    f"minimum {self.min_value:.2f}x at step {self.min_step})"]
        return []

    def summary(self) -> dict[str, Any]:
        """The shared keys, and min_ratio (1.0 when nothing was judged yet)."""
        return {**super().summary(),
                "min_ratio": 1.0 if self.min_value is None else self.min_value}

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "last_ratio": self.last_ratio}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.last_ratio = state.get("last_ratio")

    def load_logged_state(self, state: Mapping[str, Any]) -> bool:
        if not super().load_logged_state(state):
            return False
        base = _get(state, "baseline")
        self.last_ratio = self._base.smoothed / base if base > 0 else None
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

    def _judge(self, step: int) -> list[str]:
        base, sm, p = self._base.mean, self._base.smoothed, self.params
        margin = max(p["reward_dip_std"] * self._base.std, p["reward_dip_rel"] * abs(base),
                     p["reward_dip_abs"])
        if self.onset_step is None:
            if sm < base - margin:
                self.onset_step = step
                self.min_value, self.min_step = sm, step
                return [f"Reward dip at step {step}: smoothed reward {sm:.4f} is below baseline "
                        f"{base:.4f} by more than {margin:.4f}"]
        elif self.recovery_step is None:
            self._low(step, sm)
            if sm >= base:
                self.recovery_step = step
                return [f"Reward Hockey Stick: reward recovered to baseline {base:.4f} at step "
                        f"{step} ({step - self.onset_step} steps after the dip onset at step "
                        f"{self.onset_step}; depth {base - self.min_value:.4f} at step "
                        f"{self.min_step})"]
        return []

    def summary(self) -> dict[str, Any]:
        """The shared keys, and depth / rel_depth of the dip (0.0 / None without one)."""
        base = self.baseline
        depth = base - self.min_value if self.min_value is not None and base is not None else 0.0
        return {**super().summary(), "depth": depth,
                "rel_depth": depth / abs(base) if base else None}

    def load_logged_state(self, state: Mapping[str, Any]) -> bool:
        """As the base; the minimum counts only inside a dip (the onset's value if unlogged)."""
        if not super().load_logged_state(state):
            return False
        if self.onset_step is None:
            self.min_value = self.min_step = None
        elif self.min_value is None:
            self.min_value, self.min_step = self._base.smoothed, self.onset_step
        return True
