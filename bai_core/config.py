"""BAI thresholds and options: one dataclass field each, read from flags or BAI_* env vars."""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any

from bai_core.constants import ENV_PREFIX, THINK_CLOSE

__all__ = [
    "BaiConfig",
    "DETECTOR_PARAMS",
    "ENV_PREFIX",
    "FLAGS",
    "LENGTH_PARAMS",
    "REWARD_PARAMS",
    "RULES",
    "check_detector_kwargs",
    "check_threshold",
]


# field -> (type, predicate on the value, what the value must be). One rule per threshold,
# shared by `bai-train` (BaiConfig.validate), the detectors' constructors and `bai-report`.
RULES: dict[str, tuple[type, Callable[[float], bool], str]] = {
    "collapse_drop": (float, lambda v: 0.0 < v < 1.0, "in (0, 1)"),
    "collapse_recover": (float, lambda v: 0.0 < v <= 1.0, "in (0, 1]"),
    "collapse_max_onset_step": (int, lambda v: v >= 0, ">= 0 (0 = any step)"),
    "baseline_steps": (int, lambda v: v >= 1, ">= 1"),
    "ema": (float, lambda v: 0.0 < v <= 1.0, "in (0, 1] (1 = no smoothing)"),
    "reward_dip_std": (float, lambda v: v >= 0.0, ">= 0"),
    "reward_dip_rel": (float, lambda v: v >= 0.0, ">= 0"),
    "reward_dip_abs": (float, lambda v: v >= 0.0, ">= 0"),
    "bucket_width": (int, lambda v: v >= 1, ">= 1"),
    "num_buckets": (int, lambda v: v >= 1, ">= 1"),
}

# detector constructor argument -> BaiConfig field
LENGTH_PARAMS: dict[str, str] = {
    "drop": "collapse_drop",
    "baseline_steps": "baseline_steps",
    "ema": "ema",
    "recover": "collapse_recover",
    "max_onset_step": "collapse_max_onset_step",
}
REWARD_PARAMS: dict[str, str] = {
    "baseline_steps": "baseline_steps",
    "std_mult": "reward_dip_std",
    "rel_drop": "reward_dip_rel",
    "ema": "ema",
    "abs_drop": "reward_dip_abs",
}
DETECTOR_PARAMS = {"length": LENGTH_PARAMS, "reward": REWARD_PARAMS}


def check_threshold(name: str, value: Any, flag: str | None = None) -> int | float:
    """Validate one threshold by its BaiConfig field `name`; return it as int or float.

    Raises ValueError naming `flag` (default `--bai.<name>`) and the bad value: wrong type
    (bools are not numbers; an int field takes no fractions), NaN/inf, or out of range.
    """
    kind, ok, text = RULES[name]
    flag = flag or FLAGS[name]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{flag} must be a number, got {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{flag} must be a finite number, got {value!r}")
    if kind is int:
        if isinstance(value, float) and not value.is_integer():
            raise ValueError(f"{flag} must be an integer, got {value!r}")
        value = int(value)
    else:
        value = float(value)
    if not ok(value):
        raise ValueError(f"{flag} must be {text}, got {value!r}")
    return value


def _check_recover(recover: float, drop: float, recover_flag: str, drop_flag: str) -> None:
    # onset: ratio < 1 - drop; recovery: ratio >= recover. A recover below 1 - drop would call
    # a run "recovered" while its length is still at a collapse level.
    if recover < 1.0 - drop:
        raise ValueError(
            f"{recover_flag} must be >= 1 - {drop_flag} = {1.0 - drop:g} (a recovered run must "
            f"not still count as collapsed), got {recover!r}"
        )


def check_detector_kwargs(
    kind: str, kwargs: Mapping[str, Any], flags: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """Validate a detector's constructor kwargs (`kind` "length" or "reward") by the rules of
    the BaiConfig fields they map to; `flags` names each argument in messages (default: the
    argument name). Returns the kwargs as ints/floats. None for `max_onset_step` means 0."""
    params = DETECTOR_PARAMS[kind]
    flags = flags or {}
    out: dict[str, Any] = {}
    for arg, value in kwargs.items():
        if arg not in params:
            raise TypeError(f"unknown {kind} detector argument {arg!r}")
        if arg == "max_onset_step" and value is None:
            value = 0
        out[arg] = check_threshold(params[arg], value, flags.get(arg, arg))
    if kind == "length" and "recover" in out and "drop" in out:
        _check_recover(out["recover"], out["drop"], flags.get("recover", "recover"),
                       flags.get("drop", "drop"))
    return out


@dataclass(frozen=True)
class BaiConfig:
    """Options of the BAI hooks; each field maps to the env var BAI_<FIELD upper-cased>."""

    collapse_drop: float = 0.5
    collapse_recover: float = 0.9
    collapse_max_onset_step: int = 0  # 0 = a collapse may start at any step
    baseline_steps: int = 3
    ema: float = 0.5
    reward_dip_std: float = 2.0
    reward_dip_rel: float = 0.10
    reward_dip_abs: float = 0.0
    bucket_width: int = 100
    num_buckets: int = 20
    stop_on_collapse: bool = False
    think_close_token: str = THINK_CLOSE
    jsonl: str = ""  # "" = <ckpt.output_dir>/bai_metrics.jsonl
    disable: bool = False

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> BaiConfig:
        """Read BAI_* vars; ValueError naming the variable when one does not parse."""
        env = os.environ if environ is None else environ
        kwargs = {}
        for f in fields(cls):
            var = ENV_PREFIX + f.name.upper()
            raw = env.get(var)
            if raw is None or raw == "":
                continue
            try:
                kwargs[f.name] = _parse(raw, f.type)
            except ValueError:
                raise ValueError(f"{var}={raw!r} is not a valid {_type_name(f.type)}") from None
        return cls(**kwargs)

    def to_env(self) -> dict[str, str]:
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            out[ENV_PREFIX + f.name.upper()] = str(int(value) if isinstance(value, bool) else value)
        return out

    def validate(self, flags: Mapping[str, str] | None = None) -> None:
        """Raise ValueError for the first invalid option, naming it (`flags[field]`, default
        the `bai-train` flag `--bai.<field>`) and its value. See RULES; in addition
        collapse_recover >= 1 - collapse_drop, booleans must be bools and strings strings."""
        names = {**FLAGS, **(flags or {})}
        for name in RULES:
            check_threshold(name, getattr(self, name), names[name])
        _check_recover(self.collapse_recover, self.collapse_drop, names["collapse_recover"],
                       names["collapse_drop"])
        for f in fields(self):
            kind = _type_name(f.type)
            value = getattr(self, f.name)
            if kind == "bool" and not isinstance(value, bool):
                raise ValueError(f"{names[f.name]} must be true or false, got {value!r}")
            if kind == "str" and not isinstance(value, str):
                raise ValueError(f"{names[f.name]} must be a string, got {value!r}")

    def length_detector_kwargs(self) -> dict[str, Any]:
        """LengthCollapseDetector arguments of this config."""
        return {arg: getattr(self, name) for arg, name in LENGTH_PARAMS.items()}

    def reward_detector_kwargs(self) -> dict[str, Any]:
        """RewardHockeyStickDetector arguments of this config."""
        return {arg: getattr(self, name) for arg, name in REWARD_PARAMS.items()}


FLAGS: dict[str, str] = {f.name: f"--bai.{f.name}" for f in fields(BaiConfig)}


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _type_name(typ: object) -> str:
    return typ if isinstance(typ, str) else getattr(typ, "__name__", str(typ))


def _parse(raw: str, typ: object) -> object:
    name = _type_name(typ)
    if name == "bool":
        text = raw.strip().lower()
        if text not in _TRUE | _FALSE:
            raise ValueError(raw)
        return text in _TRUE
    if name == "int":
        return int(raw)
    if name == "float":
        return float(raw)
    return raw
