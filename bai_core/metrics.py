"""Pure, vectorized per-rollout-batch metrics for response length, think blocks and reward."""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["bucket_keys", "compute_response_metrics", "length_by_outcome", "think_end_positions",
           "zero_spread_group_ratio"]


def think_end_positions(response_ids: torch.Tensor, response_mask: torch.Tensor,
                        think_close_ids: Sequence[int]) -> torch.Tensor:
    """Offset (in valid response tokens) of the first `</think>` token per row; -1 if none.

    `response_ids` and `response_mask` are (B, T); padding may sit on either side, the offset
    counts valid (masked-in) tokens only, so it is comparable with the response length.
    """
    if response_ids.dim() != 2 or response_ids.shape != response_mask.shape:
        raise ValueError(
            f"response_ids {tuple(response_ids.shape)} and response_mask "
            f"{tuple(response_mask.shape)} must be the same (B, T) shape"
        )
    batch = response_ids.size(0)
    ids = [int(i) for i in think_close_ids]
    if batch == 0 or response_ids.size(1) == 0 or not ids:
        return torch.full((batch,), -1, dtype=torch.long, device=response_ids.device)
    mask = response_mask.bool()
    if len(ids) == 1:
        hit = response_ids == ids[0]
    else:
        hit = torch.isin(response_ids, torch.tensor(ids, device=response_ids.device))
    # `</think>` is rare: find all hits (one pass), then work on hits only.
    rows, cols = hit.nonzero(as_tuple=True)
    valid = mask[rows, cols]
    rows, cols = rows[valid], cols[valid]
    first = torch.full((batch,), response_ids.size(1), dtype=torch.long, device=hit.device)
    first.scatter_reduce_(0, rows, cols, reduce="amin")
    out = torch.full((batch,), -1, dtype=torch.long, device=hit.device)
    has = first < response_ids.size(1)
    if not bool(has.any()):
        return out
    hit_rows = has.nonzero(as_tuple=True)[0]
    c = first[hit_rows]
    # offset = number of valid tokens strictly before the hit column (padding may be anywhere)
    span = torch.arange(int(c.max()) + 1, device=hit.device)
    before = (span.unsqueeze(0) < c.unsqueeze(1)) & mask[hit_rows, : span.numel()]
    out[hit_rows] = before.sum(dim=1)
    return out


def bucket_keys(lo: int, hi: int) -> tuple[str, str]:
    """Metric names (mean, count) of the reward-by-length bucket [lo, hi)."""
    base = f"bai/reward_by_length/{lo:04d}-{hi:04d}"
    return f"{base}/mean", f"{base}/count"


def _std(x: torch.Tensor) -> float:
    return float(x.std().item()) if x.numel() > 1 else 0.0


def compute_response_metrics(lengths: torch.Tensor, *, truncated: torch.Tensor | None = None,
                             think_end: torch.Tensor | None = None,
                             rewards: torch.Tensor | None = None, bucket_width: int = 100,
                             num_buckets: int = 20) -> dict[str, float]:
    """All per-batch `bai/` metrics for B responses; keys whose input is None are omitted.

    Conventions: std is the sample std (n-1, as OpenRLHF's `rollout/reward_std`; 0 for n=1);
    median is the lower median (torch.median); p10/p90 interpolate linearly (torch.quantile).
    Think length counts tokens up to and including `</think>`; a response without `</think>`
    is all think (answer length 0), so think + answer = length. Reward buckets are half-open
    [lo, hi) in tokens; lengths >= bucket_width * num_buckets fall in no bucket.
    """
    if bucket_width <= 0 or num_buckets <= 0:
        raise ValueError("bucket_width and num_buckets must be positive")
    lengths = lengths.reshape(-1)
    n = lengths.numel()
    if n == 0:
        return {}
    lens = lengths.to(torch.float64)
    q = torch.quantile(lens, torch.tensor([0.1, 0.9], dtype=torch.float64, device=lens.device))
    stats = {"mean": lens.mean(), "median": lens.median(), "p10": q[0], "p90": q[1],
             "min": lens.min(), "max": lens.max(), "std": _std(lens)}
    out: dict[str, float] = {f"bai/response_length/{k}": float(v) for k, v in stats.items()}

    if truncated is not None:
        clip = float(truncated.reshape(-1).to(torch.float64).mean().item())
        out["bai/response_length/clip_ratio"] = clip
        out["bai/response_length/eos_ratio"] = 1.0 - clip

    if think_end is not None:
        te = think_end.reshape(-1).to(lens.device)
        closed = te >= 0
        think_len = torch.where(closed, (te + 1).to(torch.float64), lens).clamp(max=lens)
        out["bai/think/closed_ratio"] = float(closed.to(torch.float64).mean().item())
        out["bai/think/think_length_mean"] = float(think_len.mean().item())
        out["bai/think/answer_length_mean"] = float((lens - think_len).mean().item())

    if rewards is not None:
        r = rewards.reshape(-1).to(torch.float64).to(lens.device)
        out["bai/reward/mean"] = float(r.mean().item())
        out["bai/reward/std"] = _std(r)
        idx = torch.div(lengths.to(lens.device).long(), bucket_width, rounding_mode="floor")
        keep = (idx >= 0) & (idx < num_buckets)
        idx, rk = idx[keep], r[keep]
        counts = torch.bincount(idx, minlength=num_buckets)[:num_buckets]
        sums = torch.bincount(idx, weights=rk, minlength=num_buckets)[:num_buckets]
        for b, (c, s) in enumerate(zip(counts.tolist(), sums.tolist(), strict=True)):
            mean_key, count_key = bucket_keys(b * bucket_width, (b + 1) * bucket_width)
            out[count_key] = float(c)
            if c > 0:
                out[mean_key] = s / c
    return out


def length_by_outcome(lengths: torch.Tensor, scores: torch.Tensor,
                      threshold: float = 0.5) -> dict[str, float]:
    """Mean length of correct (score >= threshold) and incorrect responses; empty side omitted."""
    lens = lengths.reshape(-1).to(torch.float64)
    ok = scores.reshape(-1).to(lens.device) >= threshold
    return {f"bai/response_length/{side}_mean": float(lens[picked].mean().item())
            for side, picked in (("correct", ok), ("incorrect", ~ok)) if picked.any()}


def zero_spread_group_ratio(rewards: torch.Tensor, group_ids: torch.Tensor,
                            atol: float = 0.0) -> float | None:
    """Share of prompt groups (responses with the same group id) whose rewards are all equal
    (max - min <= atol): they give group-baseline estimators no signal. None if no group has
    two responses."""
    r = rewards.reshape(-1).to(torch.float64)
    g = group_ids.reshape(-1).to(torch.long).to(r.device)
    if r.numel() == 0:
        return None
    _, inv = torch.unique(g, return_inverse=True)
    k = int(inv.max()) + 1
    counts = torch.bincount(inv, minlength=k)
    hi = torch.full((k,), -torch.inf, dtype=torch.float64).scatter_reduce(0, inv, r, "amax")
    lo = torch.full((k,), torch.inf, dtype=torch.float64).scatter_reduce(0, inv, r, "amin")
    multi = counts > 1
    if not bool(multi.any()):
        return None
    flat = (hi - lo <= atol) & multi
    return float(flat.sum()) / float(multi.sum())
