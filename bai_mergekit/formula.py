"""The BAI formula: M = alpha * M_base + (1 - alpha) * sum_i w_i / sum(w) * M_i (pure math)."""

from __future__ import annotations

import math
from collections.abc import Sequence

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


def bai_merge_grid(
    base: torch.Tensor,
    models: Sequence[torch.Tensor],
    ratios: Sequence[tuple[Sequence[float], float]],
    normalize: bool = True,
    out_dtype: torch.dtype | None = None,
) -> list[torch.Tensor]:
    """Merge one tensor for each (weights, base_weight) in `ratios`, reading the inputs once.

    Each output element is accumulated in fp32 (fp64 for fp64 input) and rounded once to
    `out_dtype` (default: the compute dtype). Work goes chunk by chunk so the fp32
    accumulator never round-trips through memory at full tensor size.
    """
    coefs = [coefficients(w, alpha, normalize) for w, alpha in ratios]
    for _, c_models in coefs:
        if len(c_models) != len(models):
            raise BaiMergeError(f"got {len(models)} models but {len(c_models)} weights")
    dtype = compute_dtype([base, *models])
    outs = [torch.empty(base.shape, dtype=out_dtype or dtype) for _ in coefs]
    flat_in = [t.reshape(-1) for t in (base, *models)]
    flat_out = [o.view(-1) for o in outs]
    total = flat_in[0].numel()
    direct = (out_dtype or dtype) == dtype
    acc = None if direct else torch.empty(min(CHUNK_ELEMENTS, total), dtype=dtype)
    for start in range(0, total, CHUNK_ELEMENTS):
        end = min(start + CHUNK_ELEMENTS, total)
        chunks = [t[start:end] for t in flat_in]
        for (c_base, c_models), out in zip(coefs, flat_out):
            buf = out[start:end] if direct else acc[: end - start]
            buf.copy_(chunks[0]).mul_(c_base)
            for chunk, c in zip(chunks[1:], c_models):
                buf.add_(chunk, alpha=c)
            if not direct:
                out[start:end].copy_(buf)
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
