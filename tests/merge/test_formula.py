"""The pure BAI formula: values, precision and refused ratios."""

import math

import pytest
import torch

import bai_core.merge_math
from bai_core.merge_math import BaiMergeError, bai_merge, coefficients


def reference(base, models, weights, alpha, normalize=True):
    """The paper's two stages, literally, in float64."""
    total = sum(weights) if normalize else 1.0
    sft = sum(w / total * m.double() for w, m in zip(weights, models, strict=True))
    return alpha * base.double() + (1 - alpha) * sft


@pytest.mark.parametrize("alpha", [0.0, 0.1, 0.5, 0.9, 1.0])
@pytest.mark.parametrize("weights", [[0.5, 0.5], [1.0, 3.0], [2.0], [0.2, 0.3, 0.5]])
def test_matches_two_stage_reference_in_fp32(alpha, weights):
    gen = torch.Generator().manual_seed(0)
    base = torch.randn(64, 32, generator=gen)
    models = [torch.randn(64, 32, generator=gen) for _ in weights]
    out = bai_merge(base, models, weights, alpha)
    assert out.dtype == torch.float32
    want = reference(base, models, weights, alpha)
    torch.testing.assert_close(out.double(), want, atol=1e-6, rtol=0)


def test_fp64_inputs_compute_in_fp64():
    gen = torch.Generator().manual_seed(1)
    base, a, b = (torch.randn(16, 8, generator=gen, dtype=torch.float64) for _ in range(3))
    out = bai_merge(base, [a, b], [1.0, 2.0], 0.3)
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, reference(base, [a, b], [1.0, 2.0], 0.3), atol=1e-14, rtol=0)


def test_bf16_inputs_are_not_rounded_before_the_end():
    gen = torch.Generator().manual_seed(2)
    base, a, b = (torch.randn(256, 64, generator=gen).bfloat16() for _ in range(3))
    out = bai_merge(base, [a, b], [0.5, 0.5], 0.5)
    assert out.dtype == torch.float32
    want = reference(base, [a, b], [0.5, 0.5], 0.5)
    torch.testing.assert_close(out.double(), want, atol=1e-6, rtol=0)


def whole_tensor_ops(base, models, weights, alpha, out_dtype):
    """The kernel's arithmetic on whole tensors, as torch's own ops do it (the definition of
    the merge's bits: fp32 `s = 0; s += c_i * M_i` in model order, `lerp(s, base, alpha)`,
    one rounding)."""
    alpha, stage1 = bai_core.merge_math.ratio(weights, alpha)
    s = torch.zeros(base.shape, dtype=torch.float32)
    for m, c in zip(models, stage1):
        s.add_(m, alpha=c)
    return torch.lerp(s, base.float(), alpha).to(out_dtype)


def bits(t):
    return t.view(-1).view(torch.int32 if t.element_size() == 4 else torch.int16)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize("alpha", [0.1, 0.5, 0.9])
def test_chunked_kernel_is_bit_for_bit_the_whole_tensor_ops(dtype, alpha):
    """Chunks, reused conversion buffers, several ratios at once (the sweep), a tail chunk and
    negative zeros: the same bits as the ops on whole tensors."""
    gen = torch.Generator().manual_seed(3)
    n = 2 * bai_core.merge_math.CHUNK_ELEMENTS + 12345
    base, a, b = ((torch.randn(n, generator=gen) * 0.02).to(dtype) for _ in range(3))
    base[:64], a[:64], b[:32] = -0.0, -0.0, -0.0
    got = bai_merge(base, [a, b], [0.5, 0.5], alpha, out_dtype=dtype)
    assert torch.equal(bits(got), bits(whole_tensor_ops(base, [a, b], [0.5, 0.5], alpha, dtype)))
    grid = [([0.5, 0.5], alpha), ([1.0, 3.0], 0.3)]
    outs = [torch.empty(n, dtype=dtype) for _ in grid]
    ratios = [bai_core.merge_math.ratio(w, x) for w, x in grid]
    for _ in bai_core.merge_math.bai_merge_chunks(base, [a, b], ratios, dtype, into=outs):
        pass
    for out, (w, x) in zip(outs, grid):
        assert torch.equal(bits(out), bits(whole_tensor_ops(base, [a, b], w, x, dtype)))


def test_unnormalized_weights_are_used_as_given():
    base, a, b = torch.ones(3), torch.full((3,), 2.0), torch.full((3,), 4.0)
    out = bai_merge(base, [a, b], [0.5, 0.25], 0.5, normalize=False)
    assert torch.equal(out, torch.full((3,), 0.5 * 1 + 0.5 * (0.5 * 2 + 0.25 * 4)))


def test_coefficients_sum_to_one_when_normalized():
    c_base, c_models = coefficients([3.0, 1.0], 0.25)
    assert c_base == 0.25
    assert c_models == pytest.approx([0.5625, 0.1875])
    assert c_base + sum(c_models) == pytest.approx(1.0)


@pytest.mark.parametrize("alpha", [-0.1, 1.5, math.nan, math.inf])
def test_base_weight_outside_unit_interval_is_refused(alpha):
    with pytest.raises(BaiMergeError, match=r"base_weight must be in \[0, 1\], got"):
        coefficients([1.0], alpha)


@pytest.mark.parametrize("weights", [[-0.5, 1.0], [math.nan, 1.0]])
def test_negative_or_nan_weight_is_refused(weights):
    with pytest.raises(BaiMergeError, match="weight must be a finite number >= 0"):
        coefficients(weights, 0.5)


def test_all_zero_weights_are_refused_and_named():
    with pytest.raises(BaiMergeError, match=r"must not all be zero, got \[0.0, 0.0\]"):
        coefficients([0.0, 0.0], 0.5)
