"""BAI thresholds and options: one dataclass field each (default, rule, help), every flag made
from it: `bai-train --bai.<field>`, the tools' `--<field-with-dashes>`, and BAI_<FIELD> env vars."""

from __future__ import annotations

import argparse
import json
import math
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from bai_core.constants import ENV_PREFIX, THINK_CLOSE

__all__ = ["BaiConfig", "CONFIG_ENV", "LENGTH_FIELDS", "REWARD_FIELDS", "THRESHOLDS",
           "add_options", "check_values", "flag"]

CONFIG_ENV = "BAI_CONFIG"  # a YAML/JSON file of BaiConfig fields; BAI_<FIELD> vars override it
Rule = tuple[Callable[[float], bool], str]


def _opt(default: Any, help: str, rule: Rule | None = None) -> Any:
    return field(default=default, metadata={"help": help, "rule": rule})


@dataclass(frozen=True)
class BaiConfig:
    """Options of the BAI metrics and detectors (the same for every framework adapter)."""

    collapse_drop: float = _opt(
        0.5, "length collapse when the smoothed mean length < (1 - drop) x baseline",
        (lambda v: 0.0 < v < 1.0, "in (0, 1)"))
    collapse_recover: float = _opt(
        0.9, "a collapse counts as recovered at this ratio to baseline (>= 1 - drop)",
        (lambda v: 0.0 < v <= 1.0, "in (0, 1]"))
    collapse_max_onset_step: int = _opt(
        0, "only detect collapses starting up to this step; 0 = any step",
        (lambda v: v >= 0, ">= 0 (0 = any step)"))
    baseline_steps: int = _opt(
        3, "steps averaged into the detectors' baseline", (lambda v: v >= 1, ">= 1"))
    ema: float = _opt(
        0.5, "EMA weight of the newest value in the detectors; 1 = no smoothing",
        (lambda v: 0.0 < v <= 1.0, "in (0, 1] (1 = no smoothing)"))
    reward_dip_std: float = _opt(
        2.0, "a reward dip needs a drop > this many baseline std", (lambda v: v >= 0.0, ">= 0"))
    reward_dip_rel: float = _opt(
        0.10, "... and > this fraction of |baseline|", (lambda v: v >= 0.0, ">= 0"))
    reward_dip_abs: float = _opt(
        0.0, "... and > this absolute amount", (lambda v: v >= 0.0, ">= 0"))
    bucket_width: int = _opt(
        100, "reward-by-length bucket width in tokens", (lambda v: v >= 1, ">= 1"))
    num_buckets: int = _opt(
        20, "number of reward-by-length buckets", (lambda v: v >= 1, ">= 1"))
    stop_on_collapse: bool = _opt(
        False, "end the run after the step where a length collapse is detected; the model of "
        "that step is saved to the run's output folder")
    think_close_token: str = _opt(THINK_CLOSE, "token closing the think block")
    samples: int = _opt(
        0, "responses a step written as text (prompt, response, reward) to bai_samples.jsonl "
        "beside the metrics; 0 = none", (lambda v: v >= 0, ">= 0"))
    jsonl: str = _opt("", "metrics JSONL path (default <output dir>/bai_metrics.jsonl)")
    disable: bool = _opt(False, "no BAI hooks: the framework runs unchanged")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> BaiConfig:
        """BAI_CONFIG's file (YAML or JSON), then BAI_<FIELD> vars over it; not validated.
        ValueError naming the variable or file when a value does not parse."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = _read_file(env[CONFIG_ENV]) if env.get(CONFIG_ENV) else {}
        for f in fields(cls):
            var = flag(f.name, "env")
            if raw := env.get(var):
                try:
                    values[f.name] = _PARSE.get(f.type, str)(raw)
                except ValueError:
                    raise ValueError(f"{var}={raw!r} is not a valid {f.type}") from None
        return cls(**values)

    def to_env(self) -> dict[str, str]:
        """BAI_<FIELD> vars that `from_env` reads back as this config."""
        return {flag(k, "env"): str(int(v) if isinstance(v, bool) else v)
                for k, v in asdict(self).items()}

    def validate(self, style: str = "train", spelled: Mapping[str, str] | None = None) -> None:
        """Raise ValueError for the first invalid option, naming its flag (`style` "train":
        `--bai.<field>`, "tool": `--<field-with-dashes>`, "env": BAI_<FIELD>) and value."""
        check_values(asdict(self), style, spelled)

    def detector_kwargs(self, names: Iterable[str]) -> dict[str, Any]:
        return {name: getattr(self, name) for name in names}


THRESHOLDS: dict[str, Rule] = {f.name: f.metadata["rule"] for f in fields(BaiConfig)
                               if f.metadata["rule"] is not None}
LENGTH_FIELDS = ("collapse_drop", "collapse_recover", "collapse_max_onset_step",
                 "baseline_steps", "ema")
REWARD_FIELDS = ("reward_dip_std", "reward_dip_rel", "reward_dip_abs", "baseline_steps", "ema")
_FIELDS = {f.name: f for f in fields(BaiConfig)}


def flag(name: str, style: str = "train") -> str:
    """The spelling of field `name` in a command line or the environment."""
    if style == "env":
        return ENV_PREFIX + name.upper()
    return f"--bai.{name}" if style == "train" else "--" + name.replace("_", "-")


def _check_one(name: str, value: Any, where: str) -> Any:
    kind = _FIELDS[name].type
    if kind in ("bool", "str"):
        if not isinstance(value, bool if kind == "bool" else str):
            need = "true or false" if kind == "bool" else "a string"
            raise ValueError(f"{where} must be {need}, got {value!r}")
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{where} must be a number, got {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{where} must be a finite number, got {value!r}")
    if kind == "int" and isinstance(value, float) and not value.is_integer():
        raise ValueError(f"{where} must be an integer, got {value!r}")
    value = int(value) if kind == "int" else float(value)
    ok, text = THRESHOLDS[name]
    if not ok(value):
        raise ValueError(f"{where} must be {text}, got {value!r}")
    return value


def check_values(values: Mapping[str, Any], style: str = "train",
                 spelled: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Validate BaiConfig field values by their rules; ints/floats normalized. ValueError names
    the flag (`spelled[field]` when given, e.g. the alias a user typed; else see `flag`) and
    the value. Also collapse_recover >= 1 - collapse_drop."""
    spelled = spelled or {}

    def name_of(name: str) -> str:
        return spelled.get(name) or flag(name, style)

    out = {name: _check_one(name, value, name_of(name)) for name, value in values.items()}
    drop = out.get("collapse_drop", _FIELDS["collapse_drop"].default)
    recover = out.get("collapse_recover")
    if recover is not None and recover < 1.0 - drop:
        # onset: ratio < 1 - drop; a recovery below that would call a collapsed run recovered
        raise ValueError(
            f"{name_of('collapse_recover')} must be >= 1 - {name_of('collapse_drop')} "
            f"= {1.0 - drop:g} (a recovered run must not still count as collapsed), "
            f"got {recover!r}")
    return out


def add_options(parser: argparse.ArgumentParser | argparse._ArgumentGroup, style: str = "train",
                names: Iterable[str] | None = None) -> None:
    """Add one option per field (`names`, default all) to `parser`; dest is the field name."""
    for name in names or _FIELDS:
        f = _FIELDS[name]
        if f.type == "bool":
            parser.add_argument(flag(name, style), dest=name, action="store_true",
                                default=f.default, help=f.metadata["help"])
            continue
        note = f"; {f.metadata['rule'][1]}" if f.metadata["rule"] else ""
        parser.add_argument(flag(name, style), dest=name, default=f.default,
                            type=_PARSE.get(f.type, str), metavar=f.type.upper(),
                            help=f"{f.metadata['help']}{note} (default %(default)r)")


def from_namespace(ns: argparse.Namespace, base: BaiConfig | None = None) -> BaiConfig:
    """The config of parsed `add_options` flags (fields the parser lacks keep `base`'s)."""
    known = {name: getattr(ns, name) for name in _FIELDS if hasattr(ns, name)}
    return replace(base or BaiConfig(), **known)


def _bool(raw: str) -> bool:
    text = raw.strip().lower()
    if text not in ("1", "true", "yes", "on", "0", "false", "no", "off"):
        raise ValueError(raw)
    return text in ("1", "true", "yes", "on")


_PARSE: dict[str, Callable[[str], Any]] = {"bool": _bool, "int": int, "float": float}


def _read_file(path: str) -> dict[str, Any]:
    """BaiConfig fields from a YAML or JSON mapping; ValueError naming the file."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"{CONFIG_ENV}={path}: cannot read ({exc.strerror})") from None
    try:
        if path.endswith(".json"):  # PyYAML reads YAML 1.1: no tabs, "5e-1" is a string
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except Exception as exc:
        raise ValueError(f"{CONFIG_ENV}={path}: not valid YAML/JSON ({exc})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"{CONFIG_ENV}={path}: expected a mapping of bai options")
    unknown = sorted(set(data) - set(_FIELDS))
    if unknown:
        raise ValueError(f"{CONFIG_ENV}={path}: unknown option(s) {', '.join(unknown)}; known: "
                         f"{', '.join(_FIELDS)}")
    return data
