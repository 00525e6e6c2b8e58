"""`bai` through mergekit's own merge-method API, in memory."""

import pytest
import torch
from mergekit.merge_methods import get, merge_tensors

from bai_core.merge_math import BaiMergeError


def test_registered_under_its_name_with_the_paper_reference():
    method = get("bai")
    assert method.spec.reference_url == "https://arxiv.org/abs/2509.00309"
    assert {p.name for p in method.spec.parameters} >= {"weight", "base_weight", "normalize"}


def test_equals_folded_linear_merge():
    gen = torch.Generator().manual_seed(0)
    base, ins, rea = (torch.randn(32, 16, generator=gen) for _ in range(3))
    ours = merge_tensors(
        [base, ins, rea], "bai", base_index=0,
        parameters={"weight": [1.0, 3.0], "base_weight": 0.2},
    )
    folded = merge_tensors(
        [base, ins, rea], "linear", parameters={"weight": [0.2, 0.8 * 0.25, 0.8 * 0.75]}
    )
    torch.testing.assert_close(ours, folded, atol=1e-6, rtol=0)


def test_base_is_identified_by_index_not_position():
    base, other = torch.zeros(4), torch.ones(4)
    out = merge_tensors([other, base], "bai", base_index=1, parameters={"base_weight": 0.75})
    assert torch.equal(out, torch.full((4,), 0.25))


def test_missing_base_is_refused():
    with pytest.raises(ValueError, match="requires a base input"):
        merge_tensors([torch.ones(2), torch.ones(2)], "bai")


def test_bf16_output_is_one_rounding_of_the_exact_value():
    gen = torch.Generator().manual_seed(3)
    tensors = [torch.randn(512, 64, generator=gen).bfloat16() for _ in range(3)]
    out = merge_tensors(tensors, "bai", base_index=0, parameters={"base_weight": 0.3})
    assert out.dtype == torch.bfloat16
    exact = 0.3 * tensors[0].double() + 0.35 * tensors[1].double() + 0.35 * tensors[2].double()
    assert within_one_bf16_rounding(out, exact)


def within_one_bf16_rounding(out: torch.Tensor, exact: torch.Tensor) -> bool:
    """|out - exact| <= half a bf16 ulp of exact (+1e-6 for the fp32 accumulation)."""
    ulp = torch.exp2(torch.floor(torch.log2(exact.abs().clamp_min(1e-30))) - 7)
    return bool(((out.double() - exact).abs() <= ulp / 2 + 1e-6).all())


def test_nan_input_names_tensor_and_model():
    base, ins = torch.zeros(8), torch.ones(8)
    ins[3] = float("nan")
    with pytest.raises(BaiMergeError, match=r"NaN/Inf in input tensor 'layers.0.w': .*'ins'"):
        merge_tensors(
            [base, ins], "bai", base_index=0, ids=["base", "'ins'"], name="layers.0.w"
        )


def test_inf_input_is_refused():
    base, ins = torch.zeros(8), torch.ones(8)
    base[0] = float("inf")
    with pytest.raises(BaiMergeError, match="NaN/Inf in input tensor 'emb'"):
        merge_tensors([base, ins], "bai", base_index=0, name="emb")


def test_bad_ratio_names_the_tensor():
    with pytest.raises(BaiMergeError, match=r"base_weight must be in \[0, 1\], got 1.2 .*'w'"):
        merge_tensors(
            [torch.ones(2), torch.ones(2)], "bai", base_index=0, name="w",
            parameters={"base_weight": 1.2},
        )
