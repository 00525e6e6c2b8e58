"""Several generation rounds per optimizer step (gradient_accumulation_steps 2, one micro-batch
per round): still one JSONL row per optimizer step, over both rounds' completions."""

from __future__ import annotations

import pytest
from trl_helpers import rows, train
from trl_rewards import length_reward

from bai_core.config import BaiConfig
from bai_trl import BaiCallback

STEPS = 2


def test_one_row_per_optimizer_step_over_all_its_rounds(actor, tmp_path):
    out = tmp_path / "run"
    bai = BaiCallback(BaiConfig())
    trainer = train("grpo", actor, out, bai.wrap([length_reward]), [bai], STEPS,
                    per_device_train_batch_size=8, num_generations=4,
                    gradient_accumulation_steps=2, steps_per_generation=1, report_to="none")
    assert trainer.state.global_step == STEPS
    got = rows(out)
    assert [r["step"] for r in got] == list(range(1, STEPS + 1))
    logged = {h["step"]: h for h in trainer.state.log_history if "bai/response_length/mean" in h}
    for row in got:
        assert row["bai/reward_by_length/0000-0100/count"] == 16  # 2 rounds x 8 completions
        # TRL logs its own completion metrics per round and averages them over the step
        assert logged[row["step"]]["completions/mean_length"] == pytest.approx(
            row["bai/response_length/mean"])
