"""OpenRLHF 0.11.2 custom reward (`--reward.remote_url path/to/math_reward.py`): math answers.

OpenRLHF loads this file by path, without package context: imports must be absolute.
"""

from __future__ import annotations

import torch

from bai_core.constants import THINK_OPEN
from bai_core.scoring import score_response

__all__ = ["response_part", "reward_func"]


def response_part(query: str, prompt: str) -> str:
    """The generated part of an OpenRLHF query (prompt + response, decoded with special tokens)."""
    if not prompt:
        return query
    if query.startswith(prompt):
        return query[len(prompt):]
    idx = query.rfind(prompt)
    return query[idx + len(prompt):] if idx >= 0 else query


def reward_func(queries: list[str], prompts: list[str], labels: list[str], **kwargs) -> dict:
    """{"rewards", "scores", "extra_logs"} tensors of shape (B,): `score_response` per sample."""
    scores = [score_response(response_part(q, p or ""), label, THINK_OPEN in (p or ""))
              for q, p, label in zip(queries, prompts, labels, strict=True)]
    t = torch.tensor(scores, dtype=torch.float32)
    return {"rewards": t, "scores": t.clone(), "extra_logs": {"math_accuracy": t.clone()}}
