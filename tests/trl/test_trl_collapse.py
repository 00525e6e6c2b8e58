"""An induced Sequence Length Collapse in TRL's GRPO loop: the detector fires, the run stops
itself with the model of that step saved, `bai-report` finds the same onset in the JSONL and in
TRL's TensorBoard log, and a resume from the onset checkpoint keeps the detector's episode.

A TEST-ONLY reward that pays for short answers (`trl_rewards.make_short_reward`) makes the tiny
actor's completions collapse within about 10 steps: this demonstrates the detector, not the
paper's cause of collapse.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from trl_helpers import MAX_LEN, BaiLogs, rows, tensorboard, train
from trl_rewards import make_short_reward

from bai_core.config import BaiConfig
from bai_trl import BaiCallback

VENV_BIN = Path(sys.executable).parent
MAX_STEPS = 16
ONSET_WINDOW = range(4, MAX_STEPS)  # after the 3 baseline steps, before the step limit


@pytest.fixture(scope="module")
def collapse(actor, tokenizer, tmp_path_factory):
    out = tmp_path_factory.mktemp("collapse") / "run"
    bai = BaiCallback(BaiConfig(), stop_on_collapse=True)
    reward = make_short_reward(tokenizer.eos_token_id, MAX_LEN)
    with BaiLogs() as logs:
        trainer = train("grpo", actor, out, bai.wrap([reward]), [bai], MAX_STEPS,
                        )
    flagged = [r["step"] for r in rows(out) if r.get("bai/detector/length_collapse") == 1]
    assert flagged, [r["bai/response_length/mean"] for r in rows(out)]
    return {"out": out, "bai": bai, "trainer": trainer, "logs": logs, "onset": flagged[0],
            "reward": reward}


def report(path: Path) -> dict:
    proc = subprocess.run([str(VENV_BIN / "bai-report"), str(path), "--json"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    runs = json.loads(proc.stdout)["runs"]
    assert len(runs) == 1
    return runs[0]


def test_detector_fires_in_the_window_and_the_run_stops_itself(collapse):
    onset, got = collapse["onset"], rows(collapse["out"])
    assert onset in ONSET_WINDOW
    assert collapse["trainer"].state.global_step == onset  # nothing trained after the onset
    assert [r["step"] for r in got] == list(range(1, onset + 1))
    assert got[-1]["bai/detector/length_ratio_smoothed"] < 0.5
    assert got[-1]["bai/detector/length_onset_step"] == onset
    warnings = collapse["logs"].messages("Sequence Length Collapse", logging.WARNING)
    assert len([m for m in warnings if "stopping the run" not in m]) == 1  # the detector's line
    stop = collapse["logs"].messages("stopping the run", logging.ERROR)
    assert len(stop) == 1 and f"at step {onset}" in stop[0] and "x baseline" in stop[0]


def test_stop_record_and_the_model_of_that_step(collapse, actor):
    from transformers import AutoModelForCausalLM

    out, onset = collapse["out"], collapse["onset"]
    record = json.loads((out / "bai_stop.json").read_text())
    assert record == collapse["bai"].stop_record
    assert set(record) == {"step", "evidence", "actor_dir", "reason"}
    assert record["step"] == onset and record["reason"] == "length_collapse"
    assert record["actor_dir"] == str(out / f"checkpoint-{onset}")
    assert record["evidence"].startswith(f"Sequence Length Collapse at step {onset}: ")
    saved = AutoModelForCausalLM.from_pretrained(record["actor_dir"]).state_dict()
    trained = collapse["trainer"].model.state_dict()
    start = AutoModelForCausalLM.from_pretrained(actor).state_dict()
    name = "lm_head.weight"
    assert torch.equal(saved[name], trained[name].cpu())
    assert not torch.equal(saved[name], start[name])


def test_tensorboard_flags_the_onset_step(collapse):
    flags = tensorboard(collapse["out"])["train/bai/detector/length_collapse"]
    onset = collapse["onset"]
    assert flags[onset] == 1.0 and all(flags[s] == 0.0 for s in range(1, onset))


def test_report_finds_the_same_onset_in_jsonl_and_tensorboard(collapse):
    out, onset = collapse["out"], collapse["onset"]
    for path in (out / "bai_metrics.jsonl", out / "runs"):
        section = report(path)["length_collapse"]
        assert section["detected"] is True and section["onset_step"] == onset, path


@pytest.fixture(scope="module")
def resumed(collapse, actor, tmp_path_factory):
    """The stopped run, copied and resumed from its onset checkpoint for two more steps."""
    onset = collapse["onset"]
    out = tmp_path_factory.mktemp("resumed") / "run"
    out.mkdir()
    shutil.copy(collapse["out"] / "bai_metrics.jsonl", out)
    shutil.copytree(collapse["out"] / f"checkpoint-{onset}", out / f"checkpoint-{onset}")
    bai = BaiCallback(BaiConfig(), stop_on_collapse=True)
    with BaiLogs() as logs:
        trainer = train("grpo", actor, out, bai.wrap([collapse["reward"]]), [bai], onset + 2,
                        resume=str(out / f"checkpoint-{onset}"))
    return {"out": out, "bai": bai, "trainer": trainer, "logs": logs, "onset": onset}


def test_resume_keeps_the_baseline_and_the_episode(collapse, resumed):
    onset = resumed["onset"]
    assert resumed["logs"].messages(f"detector state of step {onset} restored")
    assert not resumed["logs"].messages("new baseline")
    assert resumed["trainer"].state.global_step == onset + 2  # no second stop
    assert resumed["bai"].stop_record is None
    assert not resumed["logs"].messages("Sequence Length Collapse at step")
    before = rows(collapse["out"])[-1]
    after = rows(resumed["out"])[onset:]
    assert [r["step"] for r in after] == [onset + 1, onset + 2]
    for row in after:
        # a fresh detector would have no baseline before 3 more steps
        assert row["bai/detector/length_baseline"] == before["bai/detector/length_baseline"]
        assert row["bai/detector/length_onset_step"] == onset
    assert report(resumed["out"] / "bai_metrics.jsonl")["length_collapse"]["onset_step"] == onset
