"""bai_trl's sample bookkeeping against TRL 1.16's own rules: the logged reward of several reward
functions, prompt groups over several generation rounds, rounds per optimizer step (read from
real GRPOConfig objects), and the wrapper keeping TRL's view of a reward function."""

from __future__ import annotations

import asyncio
import math

import pytest
import torch

from bai_core.config import BaiConfig
from bai_trl import BaiCallback
from bai_trl.callback import rounds_per_step
from bai_trl.samples import batch_from_rounds, local_round, total_rewards


def test_total_reward_is_trls_weighted_nansum_with_unscorable_rows_nan():
    per_func = [[1.0, None, None, 0.5], [2.0, 3.0, None, math.nan]]
    got = total_rewards(per_func, [0.5, 2.0])
    # TRL: (rewards_per_func * weights).nansum(dim=1), NaN where every function gave None/NaN
    assert got[:2] == [0.5 + 4.0, 6.0] and math.isnan(got[2]) and got[3] == 0.25


def test_local_round_lengths_clipping_and_think_offsets():
    eos, pad, think = 9, 8, 7
    rnd = local_round([[1, 7, 2, 9], [1, 2, 3], [5, 8], [7]], {eos, pad}, [think], None, None)
    assert rnd["lengths"] == [4, 3, 2, 1]
    assert rnd["truncated"] == [False, True, False, True]  # no eos/pad id last = clipped
    assert rnd["think_end"] == [1, -1, -1, 0]


def test_groups_stay_within_their_round():
    rounds = [{"lengths": [1] * 4, "truncated": None, "think_end": None,
               "rewards": [0.0, 0.0, 1.0, 2.0], "scores": None} for _ in range(2)]
    batch = batch_from_rounds(rounds, num_generations=2)
    assert batch.group_ids.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert batch.rewards.dtype == torch.float32 and batch.truncated is None


@pytest.mark.parametrize(("options", "rounds"), [
    ({}, 1),                                                      # TRL's default: one per step
    ({"gradient_accumulation_steps": 4, "steps_per_generation": 2}, 2),
    ({"gradient_accumulation_steps": 4, "steps_per_generation": 1, "num_iterations": 2}, 2),
    ({"gradient_accumulation_steps": 2, "steps_per_generation": 4}, 1),  # a round, 2 steps
    ({"num_iterations": 3}, 1),
])
def test_rounds_per_step_of_real_grpo_configs(tmp_path, options, rounds):
    from trl import GRPOConfig

    args = GRPOConfig(output_dir=str(tmp_path), per_device_train_batch_size=8,
                      num_generations=4, use_cpu=True, bf16=False, report_to="none", **options)
    assert rounds_per_step(args) == rounds


def test_wrap_keeps_names_outputs_and_async_kind():
    from trl.trainer.utils import get_callable_name, is_async_callable

    def accuracy(completions, **kwargs):
        return [1.0 for _ in completions]

    async def judge(completions, **kwargs):
        return [0.5 for _ in completions]

    bai = BaiCallback(BaiConfig())
    wrapped = bai.wrap([accuracy, judge])
    assert [get_callable_name(f) for f in wrapped] == ["accuracy", "judge"]
    assert [is_async_callable(f) for f in wrapped] == [False, True]
    assert wrapped[0](completions=["a", "b"], completion_ids=[[1], [2]]) == [1.0, 1.0]
    assert asyncio.run(wrapped[1](completions=["a"], completion_ids=[[1]])) == [0.5]
    assert BaiCallback(BaiConfig(disable=True)).wrap(accuracy) is accuracy


def test_bad_threshold_is_refused_at_construction():
    with pytest.raises(ValueError, match="collapse_drop"):
        BaiCallback(BaiConfig(), collapse_drop=1.5)
