"""Rule-based math verifier on a table of cases, and its OpenRLHF reward_func contract."""

import pytest
import torch

from bai_core.scoring import extract_answer, normalize_answer, score_answer
from openrlhf_patches.math_reward import reward_func

CASES = [
    # (response, reference, expected score)
    ("so the answer is \\boxed{42}.", "42", 1.0),
    ("\\boxed{41}", "42", 0.0),
    ("first \\boxed{1} then \\boxed{\\frac{1}{2}}", "0.5", 1.0),
    ("\\boxed{\\dfrac{3}{4}}", "\\frac{3}{4}", 1.0),
    ("\\boxed{\\frac12}", "1/2", 1.0),
    ("\\boxed{-\\frac{1}{3}}", "-0.333333333", 1.0),
    ("\\boxed{\\frac{1}{3}}", "0.33", 0.0),
    ("\\boxed{x^{2}+\\frac{1}{2}}", "x^{2}+\\frac{1}{2}", 1.0),
    ("\\boxed{\\text{(B)}}", "(B)", 1.0),
    ("\\boxed{1,000}", "1000", 1.0),
    ("\\boxed{1,2}", "12", 0.0),  # a list, not a thousands separator
    ("\\boxed{$5$}", "5", 1.0),
    ("\\boxed{ 3.0 }", "3", 1.0),
    ("\\boxed{50\\%}", "0.5", 1.0),
    ("The answer is 7.", "7", 1.0),
    ("The final answer is: $12$", "12", 1.0),
    ("we get 3 apples, then 5 pears, total 8", "8", 1.0),
    ("total 8 or maybe 9", "8", 0.0),
    ("no number here", "8", 0.0),
    ("\\boxed{12", "12", 0.0),  # unbalanced: the response was cut
    ("\\boxed{2}", "\\boxed{2}", 1.0),
    ("\\boxed{1e3}", "1000", 1.0),
    ("", "1", 0.0),
]


@pytest.mark.parametrize(("response", "reference", "expected"), CASES)
def test_score_answer_table(response, reference, expected):
    assert score_answer(response, reference) == expected


def test_extract_and_normalize():
    assert extract_answer("a \\boxed{\\frac{a}{\\sqrt{b}}} b") == "\\frac{a}{\\sqrt{b}}"
    assert extract_answer("x = 3, y = -4.5") == "-4.5"
    assert extract_answer("nothing") is None
    assert normalize_answer(" \\text{ 12 } . ") == "12"
    assert normalize_answer("12,345.5") == "12345.5"
    assert normalize_answer("\\left( 1, 2 \\right)") == "(1,2)"


def test_reward_func_scores_only_the_response():
    prompt = "<|User|>What is 6*7? The answer is 41 says Bob.<|Assistant|><think>\n"
    good = prompt + "6*7... maybe 41? no.</think>The answer is \\boxed{42}.<|end|>"
    wrong = prompt + "hmm</think>\\boxed{41}"
    unclosed = prompt + "the answer is \\boxed{42} wait let me check"
    out = reward_func([good, wrong, unclosed], [prompt] * 3, ["42"] * 3)
    assert set(out) == {"rewards", "scores", "extra_logs"}
    assert out["rewards"].tolist() == [1.0, 0.0, 0.0]
    assert torch.equal(out["rewards"], out["scores"])
    assert out["extra_logs"]["math_accuracy"].shape == (3,)


def test_reward_func_without_think_tags():
    prompt = "Q: 2+2?\nA:"
    out = reward_func([prompt + " 4"], [prompt], ["4"])
    assert out["rewards"].tolist() == [1.0]
    # prompt numbers never count: the last number of the prompt is 2, the response has none
    assert reward_func([prompt + " no idea"], [prompt], ["2"])["rewards"].tolist() == [0.0]


def test_reward_func_loads_the_way_openrlhf_loads_it():
    import importlib.util

    import openrlhf_patches.math_reward as mod

    spec = importlib.util.spec_from_file_location("reward_func", mod.__file__)
    loaded = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(loaded)  # as openrlhf.utils.agent does: no package context
    out = loaded.reward_func(["p \\boxed{1}"], ["p"], ["1"])
    assert out["rewards"].tolist() == [1.0]
