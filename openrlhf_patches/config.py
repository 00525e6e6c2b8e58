"""BAI hook settings, carried from `bai-train` to Ray workers through BAI_* environment vars."""

from __future__ import annotations

import os
from dataclasses import dataclass, fields

__all__ = ["BaiConfig", "ENV_PREFIX"]

ENV_PREFIX = "BAI_"


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
    think_close_token: str = "</think>"
    jsonl: str = ""  # "" = <ckpt.output_dir>/bai_metrics.jsonl
    disable: bool = False

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> BaiConfig:
        env = os.environ if environ is None else environ
        kwargs = {}
        for f in fields(cls):
            raw = env.get(ENV_PREFIX + f.name.upper())
            if raw is None or raw == "":
                continue
            kwargs[f.name] = _parse(raw, f.type)
        return cls(**kwargs)

    def to_env(self) -> dict[str, str]:
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            out[ENV_PREFIX + f.name.upper()] = str(int(value) if isinstance(value, bool) else value)
        return out


def _parse(raw: str, typ: object) -> object:
    name = typ if isinstance(typ, str) else getattr(typ, "__name__", str(typ))
    if name == "bool":
        return raw.strip().lower() in {"1", "true", "yes", "on"}
    if name == "int":
        return int(raw)
    if name == "float":
        return float(raw)
    return raw
