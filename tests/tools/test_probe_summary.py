"""The pure candidate summary: hand-checked numbers on crafted token ids (no vLLM)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

from bai_core.scoring import score_answer
from bai_tools.probe_summary import pad_batch, probe_reward, summarize_samples

CLOSE = 9


@dataclass(frozen=True)
class S:
    prompt_index: int
    token_ids: tuple[int, ...]
    finish_reason: str | None
    text: str


SAMPLES = [
    S(0, (1, 2, CLOSE, 3, 2), "stop", "a b</think> \\boxed{12}<eos>"),   # think 3, answer 2
    S(0, (1, 1, 1, 1, 1, 1), "length", "thinking 12 and more"),          # clipped, open
    S(1, (CLOSE, 4), "stop", "</think>7"),                               # think 1, answer 1
    S(2, (5, 5, 5), "stop", "no think block 3"),                         # not scored
]


def test_pad_batch_right_pads_with_mask():
    ids, mask = pad_batch([(1, 2, 3), (), (4,)], pad_id=0)
    assert ids.tolist() == [[1, 2, 3], [0, 0, 0], [4, 0, 0]]
    assert mask.sum(dim=1).tolist() == [3, 0, 1]


def test_summary_numbers_by_hand():
    out = summarize_samples(
        SAMPLES, think_close_ids=[CLOSE], references=["12", "7", None],
        think_open_in_prompt=[True, True, True],
    )
    m = out["metrics"]
    assert (out["num_samples"], out["num_prompts"], out["num_scored"]) == (4, 3, 3)
    assert m["bai/response_length/mean"] == pytest.approx((5 + 6 + 2 + 3) / 4)
    assert (m["bai/response_length/min"], m["bai/response_length/max"]) == (2.0, 6.0)
    assert m["bai/response_length/clip_ratio"] == 0.25
    assert m["bai/think/closed_ratio"] == 0.5
    # think lengths 3, 6 (open: all think), 1, 3 (open: all think)
    assert m["bai/think/think_length_mean"] == pytest.approx((3 + 6 + 1 + 3) / 4)
    assert m["bai/think/answer_length_mean"] == pytest.approx((2 + 0 + 1 + 0) / 4)
    # rewards: boxed 12 after </think> = 1; open think block = 0; "7" = 1
    assert [r["reward"] for r in out["per_sample"]] == [1.0, 0.0, 1.0, None]
    assert m["bai/reward/mean"] == pytest.approx(2 / 3)
    assert m["bai/reward_by_length/0000-0100/count"] == 3.0
    assert m["bai/response_length/correct_mean"] == pytest.approx(3.5)
    assert m["bai/response_length/incorrect_mean"] == 6.0
    assert [r["think_end"] for r in out["per_sample"]] == [2, -1, 0, -1]


def test_no_reference_means_no_reward_keys():
    out = summarize_samples(SAMPLES[:2], think_close_ids=[CLOSE], references=[None])
    assert out["num_scored"] == 0
    assert not any(k.startswith("bai/reward") for k in out["metrics"])


def test_probe_reward_scores_only_the_answer():
    assert probe_reward("x 12 </think> 13", "12", True, score_answer) == 0.0
    assert probe_reward("x 12 </think> 13", "13", True, score_answer) == 1.0
    assert probe_reward("still thinking, 12", "12", True, score_answer) == 0.0
    assert probe_reward("<think> 12", "12", False, score_answer) == 0.0
    assert probe_reward("the answer is 12", "12", False, score_answer) == 1.0


def test_custom_scorer_and_empty_input():
    calls = []

    def scorer(text: str, ref: str) -> float:
        calls.append((text, ref))
        return 0.5

    out = summarize_samples(SAMPLES[2:3], think_close_ids=[CLOSE], references=["x", "7"],
                            scorer=scorer)
    assert calls == [("7", "7")] and out["metrics"]["bai/reward/mean"] == 0.5
    with pytest.raises(ValueError):
        summarize_samples([], think_close_ids=[CLOSE], references=[])
    assert torch.is_tensor(pad_batch([(1,)])[0])


@pytest.mark.parametrize(
    ("prompt", "response", "label"),
    [
        ("<|im_start|>assistant\n<think>\n", "so 12</think> \\boxed{12}", "12"),
        ("<|im_start|>assistant\n<think>\n", "so 12</think> \\boxed{13}", "12"),
        ("<|im_start|>assistant\n<think>\n", "so \\boxed{12} and on", "12"),
        ("<|im_start|>assistant\n", "the answer is 12", "12"),
        ("<|im_start|>assistant\n", "<think>12 maybe", "12"),
        ("<|im_start|>assistant\n", "<think>hm</think>the answer is 5%", "0.05"),
    ],
)
def test_probe_reward_matches_the_training_reward_func(prompt, response, label):
    from bai_tools.generation import think_open_at_end
    from openrlhf_patches.math_reward import reward_func

    trained = float(reward_func([prompt + response], [prompt], [label])["rewards"][0])
    assert probe_reward(response, label, think_open_at_end(prompt), score_answer) == trained


def test_multi_token_think_close_skips_think_metrics():
    out = summarize_samples(SAMPLES[:2], think_close_ids=[CLOSE, 4], references=[None])
    assert not any(k.startswith("bai/think/") for k in out["metrics"])
    assert [r["think_end"] for r in out["per_sample"]] == [None, None]
    assert out["metrics"]["bai/response_length/clip_ratio"] == 0.5
