"""Pure summary of one candidate's sampled token ids, through openrlhf_patches.metrics."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

import torch

from openrlhf_patches.metrics import (
    compute_response_metrics,
    length_by_outcome,
    think_end_positions,
)

Scorer = Callable[[str, str], float]


class SampleLike(Protocol):
    """What the summary reads from a sample (bai_tools.generation.Sample fits)."""

    prompt_index: int
    token_ids: Sequence[int]
    finish_reason: str | None
    text: str


def pad_batch(token_ids: Sequence[Sequence[int]], pad_id: int = 0):
    """Right-pad token id lists into (B, T) ids and a (B, T) bool mask of valid tokens."""
    width = max((len(t) for t in token_ids), default=0)
    ids = torch.full((len(token_ids), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(token_ids), width), dtype=torch.bool)
    for row, toks in enumerate(token_ids):
        if toks:
            ids[row, : len(toks)] = torch.as_tensor(list(toks), dtype=torch.long)
            mask[row, : len(toks)] = True
    return ids, mask


def _default_scorer() -> Scorer:
    from openrlhf_patches.math_reward import score_answer

    return score_answer


def summarize_samples(
    samples: Sequence[SampleLike],
    *,
    think_close_ids: Sequence[int],
    references: Sequence[str | None],
    scorer: Scorer | None = None,
    bucket_width: int = 100,
    num_buckets: int = 20,
) -> dict[str, Any]:
    """Length, clip, think and (where a reference exists) reward metrics of one candidate.

    `references[i]` is the reference answer of prompt i (None: not scored). Returns
    `{"num_samples", "num_prompts", "num_scored", "metrics": {bai/... keys}, "per_sample"}`;
    reward keys are computed over the scored samples only.
    """
    if not samples:
        raise ValueError("no samples to summarize")
    ids, mask = pad_batch([s.token_ids for s in samples])
    lengths = mask.sum(dim=1)
    truncated = torch.tensor([s.finish_reason == "length" for s in samples], dtype=torch.bool)
    think_end = think_end_positions(ids, mask, think_close_ids)
    metrics = compute_response_metrics(
        lengths,
        truncated=truncated,
        think_end=think_end,
        bucket_width=bucket_width,
        num_buckets=num_buckets,
    )
    rewards: list[float | None] = []
    score = None
    for s in samples:
        reference = references[s.prompt_index]
        if reference is None:
            rewards.append(None)
            continue
        score = score or scorer or _default_scorer()
        rewards.append(float(score(s.text, reference)))
    scored = [i for i, r in enumerate(rewards) if r is not None]
    if scored:
        rows = torch.tensor(scored, dtype=torch.long)
        reward_tensor = torch.tensor([rewards[i] for i in scored], dtype=torch.float64)
        reward_metrics = compute_response_metrics(
            lengths[rows],
            rewards=reward_tensor,
            bucket_width=bucket_width,
            num_buckets=num_buckets,
        )
        metrics.update(
            {k: v for k, v in reward_metrics.items() if not k.startswith("bai/response_length/")}
        )
        metrics.update(length_by_outcome(lengths[rows], reward_tensor))
    per_sample = [
        {
            "prompt_index": s.prompt_index,
            "length": int(lengths[i]),
            "finish_reason": s.finish_reason,
            "think_end": int(think_end[i]),
            "reward": rewards[i],
        }
        for i, s in enumerate(samples)
    ]
    return {
        "num_samples": len(samples),
        "num_prompts": len({s.prompt_index for s in samples}),
        "num_scored": len(scored),
        "metrics": metrics,
        "per_sample": per_sample,
    }
