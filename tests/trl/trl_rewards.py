"""TEST-ONLY TRL reward functions: short answers pay (to induce a collapse), lengths, NaN."""

from __future__ import annotations

import math
from collections.abc import Callable


def make_short_reward(eos_id: int, max_len: int) -> Callable[..., list[float]]:
    """reward = max(0, 1 - n / max_len) for a completion that ended with EOS after n tokens,
    0 for one cut at the limit (as tests/e2e/rewards_short.py for OpenRLHF)."""

    def short_reward(completion_ids, **kwargs) -> list[float]:
        return [max(0.0, 1.0 - len(ids) / max_len) if ids and ids[-1] == eos_id else 0.0
                for ids in completion_ids]

    return short_reward


def length_reward(completion_ids, **kwargs) -> list[float]:
    """Longer completions score more: varied rewards, no pressure towards short answers."""
    return [len(ids) / 100.0 for ids in completion_ids]


def nan_reward(completion_ids, **kwargs) -> list[float]:
    """Every second completion gets NaN (a broken reward function)."""
    return [math.nan if i % 2 else 0.5 for i in range(len(completion_ids))]
