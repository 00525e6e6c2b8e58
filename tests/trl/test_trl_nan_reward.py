"""A reward function returning NaN: bai logs the failure once, skips the reward metrics of
those steps (the length metrics stay), and TRL's training runs to its end."""

from __future__ import annotations

import logging

from trl_helpers import BaiLogs, rows, train
from trl_rewards import nan_reward

from bai_core.config import BaiConfig
from bai_trl import BaiCallback

STEPS = 3


def test_nan_reward_is_logged_once_and_training_completes(actor, tmp_path):
    out = tmp_path / "run"
    bai = BaiCallback(BaiConfig())
    with BaiLogs() as logs:
        trainer = train("grpo", actor, out, bai.wrap([nan_reward]), [bai], STEPS,
                        report_to="none")
    assert trainer.state.global_step == STEPS
    failures = logs.messages("failed and is skipped", logging.WARNING)
    assert len(failures) == 1 and "not finite" in failures[0], failures
    got = rows(out)
    assert [r["step"] for r in got] == list(range(1, STEPS + 1))
    for row in got:
        assert row["bai/response_length/mean"] > 0
        assert not any(k.startswith(("bai/reward", "bai/detector/reward")) for k in row), row
