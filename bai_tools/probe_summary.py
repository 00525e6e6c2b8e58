"""Pure summary of one candidate's sampled token ids, through bai_core.metrics."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import torch

from bai_core.metrics import compute_response_metrics, length_by_outcome, think_end_positions
from bai_core.scoring import answer_part, score_answer

LOG = logging.getLogger(__name__)

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


def probe_reward(text: str, reference: str, think_open: bool, scorer: Scorer) -> float:
    """Math reward as the training reward gives it (bai_core.scoring.answer_part's rule)."""
    answer = answer_part(text, think_open)
    return 0.0 if answer is None else float(scorer(answer, reference))


def summarize_samples(
    samples: Sequence[SampleLike],
    *,
    think_close_ids: Sequence[int],
    references: Sequence[str | None],
    think_open_in_prompt: Sequence[bool] | None = None,
    scorer: Scorer | None = None,
    bucket_width: int = 100,
    num_buckets: int = 20,
) -> dict[str, Any]:
    """Length, clip, think and (where `references[prompt]` is not None) reward metrics of one
    candidate: `{"num_samples", "num_prompts", "num_scored", "metrics", "per_sample"}`. Reward
    keys cover the scored samples only; think keys need `</think>` to be one token
    (think_end_positions matches any of the ids: R1-style vocabularies), else they are left out."""
    if not samples:
        raise ValueError("no samples to summarize")
    ids, mask = pad_batch([s.token_ids for s in samples])
    lengths = mask.sum(dim=1)
    truncated = torch.tensor([s.finish_reason == "length" for s in samples], dtype=torch.bool)
    think_end = think_end_positions(ids, mask, think_close_ids) if len(
        think_close_ids) == 1 else None
    if think_end is None:
        LOG.warning("`</think>` is not a single token (%s): think metrics skipped",
                    list(think_close_ids))
    buckets = {"bucket_width": bucket_width, "num_buckets": num_buckets}
    metrics = compute_response_metrics(lengths, truncated=truncated, think_end=think_end,
                                       **buckets)
    opened = think_open_in_prompt or [False] * (max(s.prompt_index for s in samples) + 1)
    rewards = [None if references[s.prompt_index] is None else probe_reward(
        s.text, references[s.prompt_index], bool(opened[s.prompt_index]), scorer or score_answer)
        for s in samples]
    scored = [i for i, r in enumerate(rewards) if r is not None]
    if scored:
        rows = torch.tensor(scored, dtype=torch.long)
        reward_tensor = torch.tensor([rewards[i] for i in scored], dtype=torch.float64)
        reward_metrics = compute_response_metrics(lengths[rows], rewards=reward_tensor, **buckets)
        metrics.update({k: v for k, v in reward_metrics.items()
                        if not k.startswith("bai/response_length/")})
        metrics.update(length_by_outcome(lengths[rows], reward_tensor))
    per_sample = [{"prompt_index": s.prompt_index, "length": int(lengths[i]),
                   "finish_reason": s.finish_reason,
                   "think_end": None if think_end is None else int(think_end[i]),
                   "reward": rewards[i]} for i, s in enumerate(samples)]
    return {
        "num_samples": len(samples),
        "num_prompts": len({s.prompt_index for s in samples}),
        "num_scored": len(scored),
        "metrics": metrics,
        "per_sample": per_sample,
    }
