"""The BAI formula M = alpha * M_base + (1 - alpha) * sum_i w_i M_i / sum_i w_i (torch only)."""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from bai_core.cli import BaiError

if TYPE_CHECKING:  # torch loads with the first tensor: recipes are checked without it
    import torch

CHUNK_ELEMENTS = 1 << 18  # 1 MiB of fp32: the working set of one chunk stays in cache
Ratio = tuple[float, tuple[float, ...]]  # (alpha, stage-1 weights w_i / sum w), checked


class BaiMergeError(BaiError, ValueError):
    """Bad BAI merge input; raised before or during a merge, never leaves complete output."""


class NonFiniteMerge(BaiMergeError):
    """A merged tensor holds NaN/Inf (a bad input, or the weighted sum overflowed)."""


def nonfinite_error(tensor_name: str, inputs: Sequence[tuple[str, torch.Tensor]]
                    ) -> BaiMergeError:
    """The one-line error for a non-finite merge of `tensor_name`: which inputs hold NaN/Inf
    and how many values (read only on this failure path), else the overflow."""
    import torch

    bad = [f"{name} ({int((~torch.isfinite(t)).sum())} values)" for name, t in inputs
           if not bool(torch.isfinite(t).all())]
    where = ", ".join(bad) if bad else "the weighted sum overflowed"
    return BaiMergeError(f"NaN/Inf in input tensor {tensor_name!r}: {where}")


@functools.lru_cache(maxsize=4096)
def _ratio(weights: tuple[float, ...], alpha: float, normalize: bool) -> Ratio:
    if not 0.0 <= alpha <= 1.0:
        raise BaiMergeError(f"base_weight must be in [0, 1], got {alpha!r}")
    if not weights:
        raise BaiMergeError("bai needs at least one non-base model with a weight")
    for w in weights:
        if not math.isfinite(w) or w < 0:
            raise BaiMergeError(f"weight must be a finite number >= 0, got {w!r}")
    if normalize and sum(weights) == 0:
        raise BaiMergeError(f"weights must not all be zero, got {list(weights)}")
    total = sum(weights) if normalize else 1.0
    return alpha, tuple(w / total for w in weights)


def ratio(weights: Sequence[float], base_weight: float, normalize: bool = True) -> Ratio:
    """(alpha, stage-1 weights), checked once per distinct ratio (mergekit calls per tensor)."""
    return _ratio(tuple(float(w) for w in weights), float(base_weight), bool(normalize))


def coefficients(weights: Sequence[float], base_weight: float,
                 normalize: bool = True) -> tuple[float, list[float]]:
    """Both stages folded into one coefficient per input: (c_base, [c_1 .. c_n]), float64."""
    alpha, stage1 = ratio(weights, base_weight, normalize)
    return alpha, [(1.0 - alpha) * w for w in stage1]


def compute_dtype(tensors: Sequence[torch.Tensor]) -> torch.dtype:
    """float64 if any input is float64, else float32: the precision the merge runs in."""
    import torch

    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


def bai_merge_chunks(
    base: torch.Tensor, models: Sequence[torch.Tensor], ratios: Sequence[Ratio],
    out_dtype: torch.dtype | None = None, into: Sequence[torch.Tensor] | None = None,
) -> Iterator[tuple[int, int, list[torch.Tensor]]]:
    """Yield (start, end, [merged chunk per ratio]) over the flattened tensor, in order.

    Per chunk: every input converted to fp32 (fp64 for fp64 input) once, into buffers reused
    for the whole tensor; stage 1 once per distinct weight set, as `s = 0; s += c_i * M_i` in
    model order; stage 2 as one `lerp` per ratio, rounded once to `out_dtype`. Chunks land in
    `into` (flat tensors, one per ratio) when given, else in reused buffers: consume them first.
    """
    import torch

    dtype = compute_dtype([base, *models])
    out_dtype = out_dtype or dtype
    flat_base, flat_models = base.reshape(-1), [t.reshape(-1) for t in models]
    total = flat_base.numel()
    size = min(CHUNK_ELEMENTS, total)
    b32 = torch.empty(size, dtype=dtype)
    m32 = [torch.empty(size, dtype=dtype) if t.dtype != dtype else None for t in flat_models]
    sft = {w: torch.empty(size, dtype=dtype) for _, w in ratios}
    accs = [torch.empty(size, dtype=dtype) for _ in ratios]
    outs = into or [torch.empty(size, dtype=out_dtype) for _ in ratios]
    for start in range(0, total, CHUNK_ELEMENTS):
        end = min(start + CHUNK_ELEMENTS, total)
        n = end - start
        b = b32[:n].copy_(flat_base[start:end])
        # exact conversions (bf16/fp16 -> fp32), so `add_` below sees the same values it would
        # convert itself, without a temporary per call
        parts = [t[start:end] if buf is None else buf[:n].copy_(t[start:end])
                 for t, buf in zip(flat_models, m32)]
        for weights, s1 in sft.items():
            s1 = s1[:n].zero_()
            for part, c in zip(parts, weights):
                s1.add_(part, alpha=c)
        chunks = []
        for (alpha, weights), acc, out in zip(ratios, accs, outs):
            dest = out[start:end] if into is not None else out[:n]
            if dest.dtype == dtype:
                chunks.append(torch.lerp(sft[weights][:n], b, alpha, out=dest))
            else:
                chunks.append(dest.copy_(torch.lerp(sft[weights][:n], b, alpha, out=acc[:n])))
        yield start, end, chunks


def bai_merge(base: torch.Tensor, models: Sequence[torch.Tensor], weights: Sequence[float],
              base_weight: float, normalize: bool = True,
              out_dtype: torch.dtype | None = None, check_finite: bool = False) -> torch.Tensor:
    """Merge one tensor in a single pass in fp32 (fp64 for fp64 input), rounded once. With
    `check_finite`, a NaN/Inf anywhere in the result raises NonFiniteMerge (checked chunk by
    chunk while the chunk is in cache, not in a second pass over the output)."""
    checked = ratio(weights, base_weight, normalize)
    if len(checked[1]) != len(models):
        raise BaiMergeError(f"got {len(models)} models but {len(checked[1])} weights")
    import torch

    out = torch.empty(base.shape, dtype=out_dtype or compute_dtype([base, *models]))
    for _, _, (chunk,) in bai_merge_chunks(base, models, [checked], out.dtype,
                                           into=[out.view(-1)]):
        # NaN/Inf anywhere makes the sum non-finite; a finite sum can still overflow
        if check_finite and not (bool(torch.isfinite(chunk.sum()))
                                 or bool(torch.isfinite(chunk).all())):
            raise NonFiniteMerge("NaN/Inf in the merged tensor")
    return out
