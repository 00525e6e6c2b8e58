"""bai-compare: helpers, then 2 actors (+ 1 that is not a model) through a shipped recipe on CPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bai_core.cli import UsageError
from bai_tools.compare import build_parser, parse_actor, run_specs
from bai_tools.compare_output import aggregate, markdown_table
from bai_tools.compare_runs import DONE_MARKER, RunPlan, budget_args, is_finished
from openrlhf_patches.argv import flag_value

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
RECIPE = "reinforce_pp_bai_7b"
SMALL_ENV = ("N_SAMPLES=4", "ROLLOUT_BATCH_SIZE=4", "TRAIN_BATCH_SIZE=16", "LR=1e-3",
             "PROMPT_MAX_LEN=64", "MAX_NEW_TOKENS=24", "SAVE_STEPS=1000")
EXTRA = ("--", "--rollout.micro_batch_size", "8", "--train.micro_batch_size", "8",
         "--algo.kl.init_coef", "0", "--bai.baseline_steps", "1")


def test_flag_value_takes_the_last():
    argv = ["--rollout.batch_size", "512", "--x", "1", "--rollout.batch_size=8"]
    assert flag_value(argv, "--rollout.batch_size") == "8"
    assert flag_value(argv, "--missing") is None


def test_budget_fixes_episodes_samples_and_seed(tmp_path):
    plan = RunPlan(recipe=tmp_path / "r.sh", steps=3, seed=7)
    assert budget_args(plan, 8) == ["--train.num_episodes", "1", "--data.max_samples", "24",
                                    "--train.seed", "7"]


def test_parse_actor_paths_and_hub_ids(tmp_path):
    assert parse_actor(f"a={tmp_path}") == ("a", str(tmp_path.resolve()))
    assert parse_actor("r1=deepseek-ai/DeepSeek-R1-Distill-Qwen-7B")[1] == \
        "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B"
    for bad in ("noequals", "=x", "bad name=x"):
        with pytest.raises(UsageError):
            parse_actor(bad)


def test_marker_of_another_plan_is_not_finished(tmp_path):
    recipe = tmp_path / "r.sh"
    recipe.write_text("true\n")
    run = tmp_path / "run"
    run.mkdir()
    (run / "bai_metrics.jsonl").write_text('{"step": 1}\n{"step": 2}\n')
    plan = RunPlan(recipe=recipe, steps=2)
    (run / DONE_MARKER).write_text(json.dumps({"fingerprint": plan.fingerprint("/a")}))
    assert is_finished(run, plan, "/a")
    assert not is_finished(run, plan, "/b")
    assert not is_finished(run, RunPlan(recipe=recipe, steps=3), "/a")
    assert not is_finished(run, RunPlan(recipe=recipe, steps=2, seed=1), "/a")


def test_runs_per_seed_with_per_actor_seeds_and_env():
    args = build_parser().parse_args(
        ["r", "--out", "o", "--steps", "1", "--actor", "a=/x", "--actor", "b=/y", "--seeds",
         "0", "--actor-seeds", "b=0,1,2", "--actor-env", "b=CRITIC_INIT=/c"])
    specs = run_specs([("a", "/x"), ("b", "/y")], args)
    assert [(n, r, s, e) for n, r, _, s, e in specs] == [
        ("a", "a", 0, {}), ("b", "b-seed0", 0, {"CRITIC_INIT": "/c"}),
        ("b", "b-seed1", 1, {"CRITIC_INIT": "/c"}), ("b", "b-seed2", 2, {"CRITIC_INIT": "/c"})]
    for bad in (["--actor-seeds", "c=1"], ["--actor-env", "a=1x=2"], ["--seeds", "1,1"]):
        with pytest.raises(UsageError):
            run_specs([("a", "/x")], build_parser().parse_args(
                ["r", "--out", "o", "--steps", "1", "--actor", "a=/x", *bad]))


def test_seeds_aggregate_to_mean_and_range():
    runs = [{"name": f"b-seed{i}", "actor": "/y", "ok": True, "error": None, "seed": i,
             "steps": 3, "final_reward": r, "collapse_detected": c}
            for i, (r, c) in enumerate([(0.2, True), (0.5, False), (0.8, True)])]
    entry = aggregate("b", runs)
    assert entry["final_reward"] == pytest.approx(0.5)
    assert (entry["final_reward_min"], entry["final_reward_max"]) == (0.2, 0.8)
    assert entry["collapse_detected_count"] == 2 and entry["n_runs"] == 3
    row = markdown_table([entry]).splitlines()[-1]
    assert "| b | 0,1,2 | ok | 3 | 2/3 |" in row and "0.500 (0.200-0.800)" in row
    failed = aggregate("b", [*runs[:2], {**runs[2], "ok": False, "error": "exit 1"}])
    assert not failed["ok"] and "b-seed2: exit 1" in failed["error"]
    assert failed["final_reward"] == pytest.approx(0.35)


def test_markdown_keeps_a_failed_row():
    table = markdown_table([{"name": "x", "ok": False, "error": "exit 1: a|b"}])
    assert "| x | FAILED: exit 1: a\\|b |" in table


# --- end to end: OpenRLHF's real loop in CPU smoke mode, twice (the second reuses the runs) ---

@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    pytest.importorskip("openrlhf")
    pytest.importorskip("vllm")
    from bai_demo.toy_models import write_tiny_family

    root = tmp_path_factory.mktemp("compare")
    write_tiny_family(root / "fam")
    with open(root / "prompts.jsonl", "w", encoding="utf-8") as fh:
        for i in range(8):
            fh.write(json.dumps({"prompt": f"What is {i} + {i}?", "label": str(2 * i)}) + "\n")
    broken = root / "not-a-model"
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": "no-such-architecture"}\n')
    return root


def _compare(workspace: Path, *actors: str) -> tuple[subprocess.CompletedProcess, float]:
    argv = [sys.executable, "-m", "bai_tools.compare", RECIPE, "--cpu", "--steps", "2",
            "--out", str(workspace / "cmp"), "--prompts", str(workspace / "prompts.jsonl"),
            "--heldout", str(workspace / "prompts.jsonl"), "--eval-max-tokens", "24",
            "--timeout", "420"]
    for actor in actors:
        argv += ["--actor", actor]
    for env in SMALL_ENV:
        argv += ["--env", env]
    env = {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
           "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    start = time.monotonic()
    proc = subprocess.run([*argv, *EXTRA], cwd=workspace, env=env, capture_output=True,
                          text=True, timeout=1200, start_new_session=True)
    return proc, time.monotonic() - start


@pytest.fixture(scope="module")
def first(workspace):
    return _compare(workspace, "instruct=fam/instruct", "broken=not-a-model",
                    "reasoning=fam/reasoning")


def test_one_failed_run_is_reported_and_the_others_complete(first, workspace):
    proc, seconds = first
    assert proc.returncode == 1, proc.stderr[-3000:]
    failed = [ln for ln in proc.stderr.splitlines() if "broken: FAILED" in ln]
    assert failed and all("\n" not in ln for ln in failed), proc.stderr[-3000:]
    report = json.loads((workspace / "cmp" / "comparison.json").read_text())
    by_name = {a["name"]: a for a in report["actors"]}
    assert [a["name"] for a in report["actors"]] == ["instruct", "broken", "reasoning"]
    assert not by_name["broken"]["ok"] and by_name["broken"]["error"]
    for name in ("instruct", "reasoning"):
        entry = by_name[name]
        assert entry["ok"] and entry["steps"] == 2, entry
        assert isinstance(entry["collapse_detected"], bool)
        assert entry["final_reward"] is not None and entry["min_length_ratio"] > 0
        assert entry["heldout_accuracy"] is not None and 0 <= entry["heldout_accuracy"] <= 1
        assert (workspace / "cmp" / "runs" / name / DONE_MARKER).is_file()
    print(f"bai-compare, 3 actors (1 broken), 2 steps: {seconds:.0f} s")


def test_comparison_files_have_one_line_per_actor(first, workspace):
    out = workspace / "cmp"
    for name in ("comparison.png", "reward_by_length.png"):
        assert (out / name).stat().st_size > 10_000, name
    rows = [ln for ln in (out / "comparison.md").read_text().splitlines()
            if ln.startswith("| ") and not ln.startswith("| actor")]
    assert [r.split("|")[1].strip() for r in rows] == ["instruct", "broken", "reasoning"]
    assert "FAILED" in rows[1] and "FAILED" not in rows[0] + rows[2]


def test_finished_runs_are_not_retrained(first, workspace):
    before = (workspace / "cmp" / "runs" / "instruct" / "bai_metrics.jsonl").read_text()
    proc, seconds = _compare(workspace, "instruct=fam/instruct", "reasoning=fam/reasoning")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stderr.count("finished earlier (2 steps), reused") == 2, proc.stderr[-3000:]
    assert (workspace / "cmp" / "runs" / "instruct" / "bai_metrics.jsonl").read_text() == before
    assert seconds < 60, seconds
