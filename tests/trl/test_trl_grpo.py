"""GRPO through the shipped recipe (recipes/trl/grpo_bai.py) on the tiny merged actor: one JSONL
row per optimizer step with the documented keys, the same values in TRL's own TensorBoard log,
and agreement with the completion metrics TRL computes itself."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from trl_helpers import BASELINE_KEYS, MAX_LEN, ROW_KEYS, rows, tensorboard

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "trl" / "grpo_bai.py"
STEPS = 3


def load_recipe():
    spec = importlib.util.spec_from_file_location("grpo_bai_recipe", RECIPE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def run(actor, tmp_path_factory):
    out = tmp_path_factory.mktemp("grpo") / "run"
    rc = load_recipe().main([
        "--model", str(actor), "--output-dir", str(out), "--max-steps", str(STEPS),
        "--num-generations", "4", "--per-device-batch-size", "8",
        "--max-completion-length", str(MAX_LEN), "--learning-rate", "1e-2", "--cpu",
        "--save-steps", "1000"])
    return rc, out


def test_recipe_finishes_and_saves_the_model(run):
    rc, out = run
    assert rc == 0
    assert (out / "model.safetensors").is_file() and (out / "config.json").is_file()
    assert not (out / "bai_stop.json").exists()


def test_one_row_per_step_with_the_documented_keys(run):
    _, out = run
    got = rows(out)
    assert [r["step"] for r in got] == list(range(1, STEPS + 1))
    for row in got:
        assert ROW_KEYS <= set(row), ROW_KEYS - set(row)
        assert row["bai/reward_by_length/0000-0100/count"] == 8  # the whole step's batch
        assert not any(k.startswith("bai/kl/") for k in row)  # TRL has no per-completion KL
        # the math reward is also the score: every completion is correct or incorrect
        assert {"bai/response_length/correct_mean", "bai/response_length/incorrect_mean"} & set(row)
    assert BASELINE_KEYS <= set(got[-1])
    assert not BASELINE_KEYS & set(got[0])


def test_tensorboard_has_the_same_values_on_the_same_steps(run):
    _, out = run
    tb = tensorboard(out)
    for row in rows(out):
        step = row["step"]
        for key, value in row.items():
            if key == "step" or value is None:
                continue
            assert tb[f"train/{key}"][step] == pytest.approx(value, rel=1e-6, abs=1e-6), key


def test_values_agree_with_trls_own_completion_metrics(run):
    _, out = run
    tb = tensorboard(out)
    pairs = {"bai/response_length/mean": "completions/mean_length",
             "bai/response_length/min": "completions/min_length",
             "bai/response_length/max": "completions/max_length",
             "bai/response_length/clip_ratio": "completions/clipped_ratio",
             "bai/reward/mean": "reward", "bai/reward/std": "reward_std",
             "bai/reward/zero_spread_group_ratio": "frac_reward_zero_std"}
    for row in rows(out):
        for ours, theirs in pairs.items():
            assert row[ours] == pytest.approx(tb[f"train/{theirs}"][row["step"]], abs=1e-6), ours
