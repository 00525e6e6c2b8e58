"""Synthetic training curves and log writers shared by the bai-report tests."""

from __future__ import annotations

import json
import math
from pathlib import Path

STEPS = list(range(1, 41))  # OpenRLHF's global_step starts at 1


def _wiggle(step: int, scale: float) -> float:
    return scale * math.sin(1.7 * step)  # deterministic "noise"


def collapse_lengths(drop_at: int = 6, recover_at: int | None = 24) -> list[float]:
    """1000 tokens, a fall to 300 at `drop_at`, back to 1100 at `recover_at` (None: never)."""
    out = []
    for s in STEPS:
        if s < drop_at:
            v = 1000.0
        elif recover_at is None or s < recover_at:
            v = 300.0
        else:
            v = 1100.0
        out.append(v + _wiggle(s, 5.0))
    return out


def dip_rewards(dip_at: int = 6, recover_at: int = 22) -> list[float]:
    """0.5, a trough at 0.2 from `dip_at`, then 0.7 from `recover_at` (the hockey stick)."""
    return [
        (0.5 if s < dip_at else 0.2 if s < recover_at else 0.7) + _wiggle(s, 0.005)
        for s in STEPS
    ]


def healthy_lengths() -> list[float]:
    return [1000.0 + 12.0 * s + _wiggle(s, 20.0) for s in STEPS]


def healthy_rewards() -> list[float]:
    return [0.40 + 0.006 * s + _wiggle(s, 0.01) for s in STEPS]


def bai_rows(lengths: list[float], rewards: list[float]) -> list[dict]:
    """Rows as the bai hooks write them to bai_metrics.jsonl."""
    return [
        {
            "step": s,
            "bai/response_length/mean": n,
            "bai/response_length/p10": 0.6 * n,
            "bai/response_length/p90": 1.4 * n,
            "bai/response_length/clip_ratio": min(1.0, n / 4000),
            "bai/think/closed_ratio": 0.9 - n / 10000,
            "bai/reward/mean": r,
            "rollout/response_length_mean": n,
            "rollout/reward_mean": r,
        }
        for s, n, r in zip(STEPS, lengths, rewards, strict=True)
    ]


def openrlhf_stats(length: float, reward: float) -> dict[str, float]:
    """OpenRLHF 0.11.2's own rollout stats keys (as _compute_rollout_stats returns them)."""
    return {
        "rollout/reward_mean": reward,
        "rollout/reward_std": 0.1,
        "rollout/response_length_mean": length,
        "rollout/truncated_rate": min(1.0, length / 4000),
        "rollout/num_samples": 64.0,
    }


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path
