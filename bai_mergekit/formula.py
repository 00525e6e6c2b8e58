"""The BAI formula: M = alpha * M_base + (1 - alpha) * sum_i w_i / sum(w) * M_i (pure math)."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import torch

from bai_mergekit.errors import BaiMergeError


def check_base_weight(base_weight: float) -> float:
    """Return alpha as float, refusing anything outside [0, 1] (NaN included)."""
    alpha = float(base_weight)
    if not 0.0 <= alpha <= 1.0:
        raise BaiMergeError(f"base_weight must be in [0, 1], got {base_weight!r}")
    return alpha


def check_weights(weights: Sequence[float], normalize: bool = True) -> list[float]:
    """Return the stage-1 weights as floats, refusing negative, non-finite or all-zero ones."""
    values = [float(w) for w in weights]
    if not values:
        raise BaiMergeError("bai needs at least one non-base model with a weight")
    for w in values:
        if not math.isfinite(w) or w < 0:
            raise BaiMergeError(f"weight must be a finite number >= 0, got {w!r}")
    if normalize and sum(values) == 0:
        raise BaiMergeError(f"weights must not all be zero, got {values}")
    return values


def coefficients(
    weights: Sequence[float], base_weight: float, normalize: bool = True
) -> tuple[float, list[float]]:
    """Fold both stages into one coefficient per input: (c_base, [c_1 .. c_n]), in float64.

    Stage 1: M_sft = sum_i w_i M_i / sum_i w_i (no division if normalize is False).
    Stage 2: M_bai = alpha M_base + (1 - alpha) M_sft.
    """
    alpha = check_base_weight(base_weight)
    values = check_weights(weights, normalize)
    total = sum(values) if normalize else 1.0
    return alpha, [(1.0 - alpha) * w / total for w in values]


def compute_dtype(tensors: Sequence[torch.Tensor]) -> torch.dtype:
    """float64 if any input is float64, else float32: the precision the merge runs in."""
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


CHUNK_ELEMENTS = 1 << 18  # 1 MiB of fp32: the working set of one chunk stays in cache


def bai_merge_chunks(
    base: torch.Tensor,
    models: Sequence[torch.Tensor],
    ratios: Sequence[tuple[Sequence[float], float]],
    normalize: bool = True,
    out_dtype: torch.dtype | None = None,
) -> Iterator[tuple[int, int, list[torch.Tensor]]]:
    """Yield (start, end, [merged chunk per ratio]) over the flattened tensor, in order.

    Per chunk: the base in fp32 (fp64 for fp64 input) once, stage 1 once per distinct weight
    set, then stage 2 as one `lerp` per ratio, rounded once to `out_dtype` (default: the
    compute dtype). The yielded chunks are reused buffers: consume them before resuming.
    """
    stages = [(tuple(check_weights(w, normalize)), check_base_weight(a)) for w, a in ratios]
    for weights, _ in stages:
        if len(weights) != len(models):
            raise BaiMergeError(f"got {len(models)} models but {len(weights)} weights")
    stage1 = {w: coefficients(w, 0.0, normalize)[1] for w, _ in stages}
    dtype = compute_dtype([base, *models])
    flat_base, flat_models = base.reshape(-1), [t.reshape(-1) for t in models]
    total = flat_base.numel()
    size = min(CHUNK_ELEMENTS, total)
    b32 = torch.empty(size, dtype=dtype)
    sft = {w: torch.empty(size, dtype=dtype) for w in stage1}
    accs = [torch.empty(size, dtype=dtype) for _ in stages]
    outs = accs if (out_dtype or dtype) == dtype else [
        torch.empty(size, dtype=out_dtype) for _ in stages
    ]
    for start in range(0, total, CHUNK_ELEMENTS):
        end = min(start + CHUNK_ELEMENTS, total)
        n = end - start
        b = b32[:n].copy_(flat_base[start:end])
        for weights, coefs in stage1.items():
            s1 = sft[weights][:n].zero_()
            for tensor, c in zip(flat_models, coefs):
                s1.add_(tensor[start:end], alpha=c)
        for (weights, alpha), acc, out in zip(stages, accs, outs):
            torch.lerp(sft[weights][:n], b, alpha, out=acc[:n])
            if out is not acc:
                out[:n].copy_(acc[:n])
        yield start, end, [out[:n] for out in outs]


def bai_merge_grid(
    base: torch.Tensor,
    models: Sequence[torch.Tensor],
    ratios: Sequence[tuple[Sequence[float], float]],
    normalize: bool = True,
    out_dtype: torch.dtype | None = None,
) -> list[torch.Tensor]:
    """Whole merged tensors, one per (weights, base_weight) in `ratios`, inputs read once."""
    outs = [torch.empty(base.shape, dtype=out_dtype or compute_dtype([base, *models]))
            for _ in ratios]
    flat = [o.view(-1) for o in outs]
    for start, end, chunks in bai_merge_chunks(base, models, ratios, normalize, out_dtype):
        for dest, chunk in zip(flat, chunks):
            dest[start:end].copy_(chunk)
    return outs


def bai_merge(
    base: torch.Tensor,
    models: Sequence[torch.Tensor],
    weights: Sequence[float],
    base_weight: float,
    normalize: bool = True,
    out_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Merge one tensor in a single pass in fp32 (fp64 for fp64 input), rounded once."""
    return bai_merge_grid(base, models, [(weights, base_weight)], normalize, out_dtype)[0]
