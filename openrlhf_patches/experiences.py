"""OpenRLHF 0.11.2 `Experience` objects and args, read into the core's ResponseBatch."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from bai_core.monitor import ResponseBatch, think_ends

__all__ = ["batch_from_experiences", "kl_is_computed", "sample_texts"]


def kl_is_computed(args: Any) -> bool:
    """Whether OpenRLHF 0.11.2 puts a real KL in `Experience.info["kl"]` (else zeros): only with
    a reference model (`--algo.kl.init_coef` > 0) and without `--algo.kl.use_loss`. Missing args
    or fields (e.g. a test trainer) count as computed."""
    kl = getattr(getattr(args, "algo", None), "kl", None)
    if getattr(kl, "use_loss", False) is True:
        return False
    coef = getattr(kl, "init_coef", None)
    return coef > 0 if isinstance(coef, int | float) and not isinstance(coef, bool) else True


def _cat(parts: list[torch.Tensor]) -> torch.Tensor | None:
    return torch.cat([p.reshape(-1).cpu() for p in parts]) if parts else None


def batch_from_experiences(experiences: Sequence[Any], think_close_ids: Sequence[int],
                           samples_per_prompt: int = 1) -> ResponseBatch | None:
    """The responses of a list of Experience, in OpenRLHF's own order (None when empty);
    prompt groups come from `Experience.index` // samples_per_prompt."""
    lengths, truncated, rewards, scores, kl, ids, masks = [], [], [], [], [], [], []
    index: list[int] | None = []
    think_ok = bool(think_close_ids)
    for exp in experiences:
        if exp.response_length is None:
            continue
        lengths.append(exp.response_length)
        idx = getattr(exp, "index", None)
        if index is not None and idx is not None and len(idx) == exp.response_length.numel():
            index.extend(int(i) for i in idx)
        else:
            index = None
        if exp.truncated is not None:
            truncated.append(exp.truncated)
        info = exp.info or {}
        for key, out in (("reward", rewards), ("score", scores), ("kl", kl)):
            if key in info:
                out.append(info[key])
        if think_ok and (exp.sequences is None or exp.action_mask is None):
            think_ok = False
        elif think_ok:
            masks.append(exp.action_mask)
            ids.append(exp.sequences[:, -exp.action_mask.size(1):])  # mask: the last A tokens
    if not lengths:
        return None
    groups = None
    if index and samples_per_prompt > 1:
        groups = torch.tensor(index, dtype=torch.long) // samples_per_prompt
    return ResponseBatch(
        lengths=_cat(lengths), truncated=_cat(truncated), rewards=_cat(rewards),
        scores=_cat(scores), kl=_cat(kl), group_ids=groups,
        think_end=think_ends(ids, masks, think_close_ids) if think_ok else None)


def _value(info: dict, key: str, row: int) -> float | None:
    value = info.get(key)
    try:
        return float(value.reshape(-1)[row]) if value is not None else None
    except (AttributeError, IndexError, RuntimeError, TypeError, ValueError):
        return None


def sample_texts(experiences: Sequence[Any], tokenizer: Any, limit: int) -> list[dict[str, Any]]:
    """The first `limit` responses, in OpenRLHF's order, as text with special tokens kept:
    prompt (the attended ids before the response), response (the action-masked ids, which
    cover the last A positions of the sequence), reward and score as OpenRLHF computed them,
    response length and whether it was cut at the limit."""
    rows: list[dict[str, Any]] = []
    for exp in experiences:
        if exp.sequences is None or exp.action_mask is None or exp.attention_mask is None:
            continue
        width = exp.action_mask.size(1)
        info = exp.info or {}
        for row in range(exp.sequences.size(0)):
            if len(rows) >= limit:
                return rows
            seq, attended = exp.sequences[row], exp.attention_mask[row].bool()
            acting = exp.action_mask[row].bool()
            start = int(acting.nonzero()[0]) + seq.numel() - width if acting.any() else \
                seq.numel()
            prompt = seq[:start][attended[:start]]
            response = seq[-width:][acting]
            truncated = exp.truncated.reshape(-1)[row] if exp.truncated is not None else None
            rows.append({
                "prompt": tokenizer.decode(prompt.tolist(), skip_special_tokens=False),
                "response": tokenizer.decode(response.tolist(), skip_special_tokens=False),
                "reward": _value(info, "reward", row), "score": _value(info, "score", row),
                "response_length": int(response.numel()),
                "truncated": bool(truncated) if truncated is not None else None})
    return rows
