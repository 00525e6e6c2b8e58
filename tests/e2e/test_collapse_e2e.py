"""The Sequence Length Collapse detector in OpenRLHF's real loop, on an induced collapse.

A TEST-ONLY reward that pays for short answers (`rewards_short.py`) makes the tiny merged actor's
response length collapse under REINFORCE++ (the rare short answers it ends get the group's
advantage); the run stops itself at the onset and is then resumed from its last checkpoint.
PPO (GAE, a critic) stops the same way and saves its critic: from the small toy family's BAI
actor (it thinks in about 60 % of its answers), with the reward 1 - n/64 and lr 1e-3, it drops
its think traces (27 to 3 tokens by step 5 in one run; in another its length swung with the 4
prompts of a step, so its run flags a collapse at 0.6x baseline). The random actor under PPO at
lr 1e-2 drifted to the length limit on a 2-core AMD EPYC (2026-12-08): it rarely ends a
response, so PPO had almost no signal. This demonstrates the detector, not the paper's cause of
collapse.

A second run feeds a reward schedule (a dip, then a recovery) through the same loop to the
Reward Hockey Stick detector; its rewards are equal within a step, so REINFORCE++'s advantages
are zero and nothing presses on the length: it is also the control run, in which the length
detector must stay silent for the same number of steps. (The shipped math reward gives the tiny
random actor 0 everywhere, the same zero advantages: the control once ran with it, a run of its
own; bai-compare's end-to-end test runs that reward.)
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bai_tools.runlog import read_tensorboard
from openrlhf_patches.launcher import EXIT_EARLY_STOP

VENV_BIN = Path(sys.executable).parent
STEPS = 12  # 16 prompts, 4 a step, 3 episodes
ONSET_WINDOW = range(4, STEPS + 1)
COLLAPSE = {"N_SAMPLES": "8", "ROLLOUT_BATCH_SIZE": "4", "TRAIN_BATCH_SIZE": "32",
            "LR": "1e-2", "EPISODES": "3"}
ARGS = ("--rollout.micro_batch_size", "8", "--train.micro_batch_size", "8",
        "--algo.kl.init_coef", "0", "--ckpt.save_steps", "1000")


def tail(text: str, n: int = 60) -> str:
    return "\n".join(text.splitlines()[-n:])


RPP_STOP = (*ARGS, "--bai.stop_on_collapse", "--ckpt.save_steps", "1")
# PPO (one sample per prompt in the recipe: 8 here, as REINFORCE++ would take), stopping at the
# collapse onset with the critic saved, a checkpoint every step
PPO_STOP = (*ARGS, "--data.max_samples", "16", "--rollout.n_samples_per_prompt",
            COLLAPSE["N_SAMPLES"],
            "--bai.stop_on_collapse", "--critic.save_value_network", "--ckpt.save_steps", "1")


def _collapse_env(small_family) -> dict[str, str]:
    """The small family's BAI actor (alpha 0.5), a 64-token budget, lr 1e-3 (measured on one
    AMD: 27 to 3 tokens by step 5 in two runs; in a third the length swung with the prompts)."""
    from bai_demo.toy_world import bai_actor

    actor = str(bai_actor(small_family, 0.5))
    return {**COLLAPSE, "ACTOR": actor, "SKIP_MERGE": "1", "BAI_TEST_ACTOR": actor,
            "PROMPT_DATA": str(small_family.train_prompts), "REWARD_PY": "rewards_short.py",
            "MAX_NEW_TOKENS": "64", "BAI_TEST_MAX_NEW_TOKENS": "64", "LR": "1e-3",
            "BAI_CPU_DTYPE": "fp32"}


@pytest.fixture(scope="module")
def collapse(run_recipe):
    """REINFORCE++ on the tiny random actor: the rare short answers it ends get the group's
    advantage, and it collapses to 1-2 tokens and stays there (steady on both CPU kinds)."""
    return run_recipe("reinforce_pp_bai_7b.sh", "collapse", RPP_STOP,
                      REWARD_PY="rewards_short.py", **COLLAPSE)


@pytest.fixture(scope="module")
def ppo_collapse(run_recipe, small_family):
    """PPO (GAE, a critic) from the small family's BAI actor, stopping at the onset with the
    critic saved; collapse at 0.6x baseline (its length swings with the 4 prompts of a step)."""
    return run_recipe("ppo_bai_7b.sh", "ppo-collapse", (*PPO_STOP, "--bai.collapse_drop", "0.4"),
                      **_collapse_env(small_family))


@pytest.fixture(scope="module")
def resumed(collapse, run_recipe):
    """The stopped run, resumed from its last checkpoint (the onset step) to the end."""
    first = collapse.rows()
    run = run_recipe("reinforce_pp_bai_7b.sh", "collapse", RPP_STOP,
                     REWARD_PY="rewards_short.py", **COLLAPSE)
    assert run.rc == 0, tail(run.log)
    return first, run


@pytest.fixture(scope="module")
def hockey(run_recipe):
    run = run_recipe("reinforce_pp_bai_7b.sh", "hockey", ARGS, REWARD_PY="rewards_schedule.py",
                     **{**COLLAPSE, "N_SAMPLES": "2", "BAI_TEST_SAMPLES_PER_STEP": "8"})
    assert run.rc == 0, tail(run.log)
    return run


def _onset(run) -> int:
    rows = run.rows()
    flagged = [r["step"] for r in rows if r.get("bai/detector/length_collapse") == 1]
    assert flagged, tail(run.log)
    return flagged[0]


def _report(path: Path) -> dict:
    out = subprocess.run([str(VENV_BIN / "bai-report"), str(path), "--json"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)["runs"][0]


def test_stop_on_collapse_ends_the_run_at_the_onset_step(collapse):
    assert collapse.rc == EXIT_EARLY_STOP, tail(collapse.log)
    onset = _onset(collapse)
    assert onset in ONSET_WINDOW
    rows = collapse.rows()
    assert rows[-1]["step"] == onset  # nothing trained after the onset step
    assert rows[-1]["bai/response_length/ratio_to_init"] < 1.0
    last = collapse.log.strip().splitlines()[-1]
    assert last.startswith(f"bai-train: early stop: Sequence Length Collapse at step {onset}: ")
    assert "x baseline" in last and str(collapse.out_dir) in last
    assert "Traceback" not in collapse.log.split("early stop")[-1]


def test_collapse_warning_was_logged(collapse):
    onset = _onset(collapse)
    assert "Sequence Length Collapse" in collapse.log and "WARNING" in collapse.log
    assert any("bai" in line and "collapse" in line.lower() and "WARNING" in line
               for line in collapse.log.splitlines()), onset


def test_actor_of_the_stopped_step_is_saved_in_hf_format(collapse):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(collapse.out_dir)
    assert model.config.model_type == "qwen2"
    record = json.loads((collapse.out_dir / "bai_stop.json").read_text())
    assert record["step"] == _onset(collapse) and record["actor_dir"] == str(collapse.out_dir)


def test_ppo_early_stop_saves_the_critic_when_asked(ppo_collapse):
    from transformers import AutoConfig

    run = ppo_collapse
    assert run.rc == EXIT_EARLY_STOP, tail(run.log)
    record = json.loads((run.out_dir / "bai_stop.json").read_text())
    assert record["step"] == _onset(run)
    critic = Path(record["critic_dir"])
    assert critic == Path(f"{run.out_dir}_critic")
    assert AutoConfig.from_pretrained(critic).model_type == "qwen2"
    assert list(critic.glob("*.safetensors")), sorted(p.name for p in critic.iterdir())


def test_onset_row_in_jsonl_and_tensorboard(collapse):
    onset = _onset(collapse)
    tb = read_tensorboard(next(collapse.tensorboard.iterdir()))
    assert tb.series["bai/detector/length_collapse"][onset] == 1.0
    assert max(tb.series["bai/detector/length_collapse"]) == onset


def test_report_finds_the_same_onset_in_jsonl_and_tensorboard(collapse):
    onset = _onset(collapse)
    for path in (collapse.jsonl, collapse.tensorboard):
        section = _report(path)["length_collapse"]
        assert section["detected"] is True and section["onset_step"] == onset, path


def test_control_run_without_length_pressure_stays_silent(hockey):
    rows = hockey.rows()
    assert [r["step"] for r in rows] == list(range(1, STEPS + 1))
    assert all(r["bai/detector/length_collapse"] == 0 for r in rows)
    assert "Sequence Length Collapse" not in hockey.log
    assert _report(hockey.jsonl)["length_collapse"]["detected"] is False


def test_reward_hockey_stick_detected_in_the_real_loop(hockey):
    rows = hockey.rows()
    assert [round(r["bai/reward/mean"], 4) for r in rows] == [1.0] * 3 + [0.3] * 3 + [1.2] * 6
    dip = [r["step"] for r in rows if r["bai/detector/reward_dip"] == 1]
    assert dip and dip[0] == 4  # smoothed 0.65 < baseline 1.0 - 10 %
    recovered = [r["step"] for r in rows if r["bai/detector/reward_recovered"] == 1]
    assert recovered and recovered[0] == 9  # EMA 0.5: 0.79, 0.997, then 1.098 >= 1.0
    assert "Reward" in hockey.log and "recovered" in hockey.log
    for path in (hockey.jsonl, hockey.tensorboard):
        section = _report(path)["reward_hockey_stick"]
        assert section["detected"] is True, path
        assert (section["onset_step"], section["min_step"], section["recovery_step"]) == (4, 6, 9)
        assert section["depth"] == pytest.approx(1.0 - 0.3875, abs=1e-6)


def test_resume_restores_the_detector_baseline(resumed):
    first, run = resumed
    onset = first[-1]["step"]
    assert "detector state restored" in run.log
    rows = run.rows()  # the same bai_metrics.jsonl: the stopped run's rows, then the resumed
    assert [r["step"] for r in rows] == list(range(1, STEPS + 1))
    baseline = sum(r["bai/response_length/mean"] for r in first[:3]) / 3  # --bai.baseline_steps
    resumed_first = rows[onset]
    # a fresh detector would still be collecting its 3 baseline steps after the resume
    assert resumed_first["bai/response_length/ratio_to_init"] == pytest.approx(
        resumed_first["bai/response_length/mean"] / baseline, rel=1e-9)


def test_resumed_run_keeps_the_episode_and_the_report_finds_the_original_onset(resumed, tmp_path):
    first, run = resumed
    onset = first[-1]["step"]
    assert "detector state restored" in run.log
    later = [r for r in run.rows() if r["step"] > onset]
    assert [r["step"] for r in later] == list(range(onset + 1, STEPS + 1))
    assert all(r["bai/detector/length_collapse"] == 1 for r in later)  # same episode
    assert all(r["bai/detector/length_onset_step"] == onset for r in later)
    # the resumed run's own log starts after the onset, with already collapsed lengths
    log = tmp_path / "resumed" / "bai_metrics.jsonl"
    log.parent.mkdir()
    log.write_text("".join(json.dumps(r) + "\n" for r in later))
    section = _report(log)["length_collapse"]
    assert section["detected"] is True and section["onset_step"] == onset
