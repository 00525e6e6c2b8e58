"""Exact values of the per-batch metrics on hand-built batches."""

import math

import pytest
import torch

from bai_core.metrics import (
    bucket_keys,
    compute_response_metrics,
    length_by_outcome,
    think_end_positions,
)

THINK = 7


def test_think_end_positions_padding_and_missing():
    ids = torch.tensor([
        [1, 2, THINK, 4, 0, 0],      # right padded, </think> at offset 2
        [0, 0, 5, THINK, 6, THINK],  # left padded: offset counts valid tokens only -> 1
        [1, 2, 3, 0, 0, 0],          # no </think>
        [0, 0, 0, 0, 0, 0],          # empty response
        [THINK, 1, 1, 1, 1, 1],      # first token
        [1, 1, 0, THINK, 0, 0],      # </think> id sits on padding -> not counted
    ])
    mask = torch.tensor([
        [1, 1, 1, 1, 0, 0],
        [0, 0, 1, 1, 1, 1],
        [1, 1, 1, 0, 0, 0],
        [0, 0, 0, 0, 0, 0],
        [1, 1, 1, 1, 1, 1],
        [1, 1, 0, 0, 0, 0],
    ], dtype=torch.bool)
    got = think_end_positions(ids, mask, [THINK])
    assert got.tolist() == [2, 1, -1, -1, 0, -1]
    assert got.dtype == torch.long


def test_think_end_positions_holes_and_multiple_ids():
    # a mask with a hole (multi-turn): offset counts only masked-in tokens before the hit
    ids = torch.tensor([[1, 9, 9, 2, 8, 3]])
    mask = torch.tensor([[1, 0, 0, 1, 1, 1]], dtype=torch.bool)
    assert think_end_positions(ids, mask, [8]).tolist() == [2]
    assert think_end_positions(ids, mask, [3, 8]).tolist() == [2]
    assert think_end_positions(ids, mask, [9]).tolist() == [-1]
    assert think_end_positions(ids, mask, []).tolist() == [-1]


def test_think_end_positions_empty_batch_and_shape_check():
    assert think_end_positions(torch.zeros(0, 5, dtype=torch.long),
                               torch.zeros(0, 5, dtype=torch.bool), [1]).numel() == 0
    with pytest.raises(ValueError):
        think_end_positions(torch.zeros(2, 5, dtype=torch.long),
                            torch.zeros(2, 4, dtype=torch.bool), [1])


def test_compute_response_metrics_exact_values():
    lengths = torch.tensor([10, 20, 30, 40, 150])
    truncated = torch.tensor([False, False, False, True, True])
    think_end = torch.tensor([4, -1, 9, -1, 99])
    rewards = torch.tensor([1.0, 0.0, 1.0, 0.0, 0.5])
    m = compute_response_metrics(lengths, truncated=truncated, think_end=think_end,
                                 rewards=rewards, bucket_width=100, num_buckets=3)
    assert m["bai/response_length/mean"] == pytest.approx(50.0)
    assert m["bai/response_length/median"] == 30.0
    # linear interpolation: p10 at rank 0.4 -> 10 + 0.4*10; p90 at rank 3.6 -> 40 + 0.6*110
    assert m["bai/response_length/p10"] == pytest.approx(14.0)
    assert m["bai/response_length/p90"] == pytest.approx(106.0)
    assert m["bai/response_length/std"] == pytest.approx(float(torch.tensor(
        [10, 20, 30, 40, 150.0]).std()))
    assert m["bai/response_length/min"] == 10.0
    assert m["bai/response_length/max"] == 150.0
    assert m["bai/response_length/clip_ratio"] == pytest.approx(0.4)
    assert m["bai/response_length/eos_ratio"] == pytest.approx(0.6)
    assert m["bai/think/closed_ratio"] == pytest.approx(0.6)
    # think lengths: 5, 20 (unclosed: all think), 10, 40, 100 ; answers 5, 0, 20, 0, 50
    assert m["bai/think/think_length_mean"] == pytest.approx(35.0)
    assert m["bai/think/answer_length_mean"] == pytest.approx(15.0)
    assert m["bai/think/think_length_mean"] + m["bai/think/answer_length_mean"] == \
        pytest.approx(m["bai/response_length/mean"])
    assert m["bai/reward/mean"] == pytest.approx(0.5)
    assert m["bai/reward/std"] == pytest.approx(float(rewards.std()))
    assert m["bai/reward_by_length/0000-0100/count"] == 4.0
    assert m["bai/reward_by_length/0000-0100/mean"] == pytest.approx(0.5)
    assert m["bai/reward_by_length/0100-0200/count"] == 1.0
    assert m["bai/reward_by_length/0100-0200/mean"] == pytest.approx(0.5)
    assert m["bai/reward_by_length/0200-0300/count"] == 0.0
    assert "bai/reward_by_length/0200-0300/mean" not in m


def test_bucket_edges_and_overflow():
    lengths = torch.tensor([0, 99, 100, 199, 200, 5000])
    rewards = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    m = compute_response_metrics(lengths, rewards=rewards, bucket_width=100, num_buckets=2)
    assert m["bai/reward_by_length/0000-0100/mean"] == pytest.approx(1.5)
    assert m["bai/reward_by_length/0100-0200/mean"] == pytest.approx(3.5)
    counts = sum(v for k, v in m.items() if k.endswith("/count"))
    assert counts == 4.0  # 200 and 5000 are past the last bucket
    assert bucket_keys(1900, 2000) == ("bai/reward_by_length/1900-2000/mean",
                                       "bai/reward_by_length/1900-2000/count")


def test_default_buckets_are_twenty_of_width_100():
    m = compute_response_metrics(torch.tensor([5]), rewards=torch.tensor([1.0]))
    count_keys = sorted(k for k in m if k.endswith("/count"))
    assert len(count_keys) == 20
    assert count_keys[0] == "bai/reward_by_length/0000-0100/count"
    assert count_keys[-1] == "bai/reward_by_length/1900-2000/count"


def test_omitted_keys_and_empty_batch():
    m = compute_response_metrics(torch.tensor([3, 5]))
    assert set(m) == {f"bai/response_length/{k}" for k in
                      ("mean", "median", "p10", "p90", "std", "min", "max")}
    assert compute_response_metrics(torch.zeros(0, dtype=torch.long),
                                     truncated=torch.zeros(0, dtype=torch.bool),
                                     rewards=torch.zeros(0)) == {}


def test_single_response_and_zero_length():
    m = compute_response_metrics(torch.tensor([0]), truncated=torch.tensor([False]),
                                 think_end=torch.tensor([-1]), rewards=torch.tensor([2.0]))
    assert m["bai/response_length/std"] == 0.0
    assert m["bai/reward/std"] == 0.0
    assert m["bai/think/think_length_mean"] == 0.0
    assert m["bai/think/answer_length_mean"] == 0.0
    assert m["bai/reward_by_length/0000-0100/mean"] == 2.0
    assert all(math.isfinite(v) for v in m.values())


def test_bad_bucket_config():
    with pytest.raises(ValueError):
        compute_response_metrics(torch.tensor([1]), bucket_width=0)


def test_length_by_outcome():
    m = length_by_outcome(torch.tensor([10, 20, 30]), torch.tensor([1.0, 0.0, 1.0]))
    assert m == {"bai/response_length/correct_mean": 20.0,
                 "bai/response_length/incorrect_mean": 20.0}
    assert length_by_outcome(torch.tensor([4]), torch.tensor([0.0])) == {
        "bai/response_length/incorrect_mean": 4.0}


def test_even_count_median_is_lower_median():
    m = compute_response_metrics(torch.tensor([4, 1, 3, 2]))
    assert m["bai/response_length/median"] == 2.0
    assert m["bai/response_length/p10"] == pytest.approx(1.3)
    assert m["bai/response_length/p90"] == pytest.approx(3.7)


def test_zero_spread_group_ratio():
    from bai_core.metrics import zero_spread_group_ratio

    rewards = torch.tensor([1.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.5])
    groups = torch.tensor([0, 0, 1, 1, 2, 2, 3])  # group 3 has one response: not counted
    assert zero_spread_group_ratio(rewards, groups) == pytest.approx(2 / 3)
    assert zero_spread_group_ratio(torch.tensor([1.0, 2.0]), torch.tensor([0, 1])) is None
    assert zero_spread_group_ratio(torch.tensor([1.0, 1.1]), torch.tensor([4, 4]),
                                   atol=0.2) == 1.0
