"""RLOOTrainer with BaiCallback: the same `bai/` keys as GRPO in a short run, in the JSONL and in
TRL's own log history, on the same steps and agreeing with TRL's completion metrics."""

from __future__ import annotations

import pytest
from trl_helpers import ROW_KEYS, rows, train
from trl_rewards import length_reward

from bai_core.config import BaiConfig
from bai_trl import BaiCallback

STEPS = 2


@pytest.fixture(scope="module")
def rloo(actor, tmp_path_factory):
    out = tmp_path_factory.mktemp("rloo") / "run"
    bai = BaiCallback(BaiConfig())
    trainer = train("rloo", actor, out, bai.wrap([length_reward]), [bai], STEPS,
                    report_to="none")
    return out, trainer


def test_rloo_rows_have_the_grpo_keys(rloo):
    out, _ = rloo
    got = rows(out)
    assert [r["step"] for r in got] == list(range(1, STEPS + 1))
    for row in got:
        assert ROW_KEYS <= set(row), ROW_KEYS - set(row)
        assert row["bai/reward_by_length/0000-0100/count"] == 16


def test_rloo_log_history_carries_the_same_values(rloo):
    out, trainer = rloo
    logged = {h["step"]: h for h in trainer.state.log_history if "completions/mean_length" in h}
    assert sorted(logged) == list(range(1, STEPS + 1))
    for row in rows(out):
        entry = logged[row["step"]]
        for key in ROW_KEYS:
            assert entry[key] == pytest.approx(row[key], rel=1e-6, abs=1e-6), key
        assert row["bai/response_length/mean"] == pytest.approx(entry["completions/mean_length"])
        assert row["bai/reward/mean"] == pytest.approx(entry["reward"], abs=1e-6)
