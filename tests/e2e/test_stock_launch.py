"""Issue 17: a user's unchanged OpenRLHF launch gets the bai hooks because bai is installed.

No `bai-train` anywhere: `python -m openrlhf.cli.train_ppo_ray ...` through `ray job submit` to
a Ray head on 127.0.0.1 (hooks on), and the same command directly, which starts its own Ray
(hooks off by BAI_DISABLE=1, and hooks off by a bad value). The CPU patches come from the
documented smoke-test opt-in BAI_CPU_SMOKE_TEST=1; configuration from BAI_* variables. (A
direct launch with the hooks on once had a run of its own: its assertions are made on the job,
whose driver runs that same command; bai-train's runs start their own Ray with the hooks on.)
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from sockets import audit_env, audit_findings, audit_folder, session_pids

HERE = Path(__file__).resolve().parent
RECIPES = HERE.parent.parent / "recipes" / "openrlhf"
VENV_BIN = Path(sys.executable).parent

ARGS = ("--rollout.micro_batch_size", "8", "--train.micro_batch_size", "8")
SMALL = {"N_SAMPLES": "4", "ROLLOUT_BATCH_SIZE": "8", "TRAIN_BATCH_SIZE": "16", "LR": "1e-2"}
STOCK_ENV = {"BAI_CPU_SMOKE_TEST": "1", "BAI_BASELINE_STEPS": "2"}
ONE_STEP = ("--data.max_samples", "8")  # runs that only check that the hooks stayed off
NO_REFERENCE = ("--algo.kl.init_coef", "0")  # no test here is about the KL: no reference model


def tail(text: str, n: int = 60) -> str:
    return "\n".join(text.splitlines()[-n:])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def stock(workspace, make_env):
    """The tiny actor merged by stock mergekit-yaml, and the OpenRLHF argv of the shipped
    REINFORCE++ recipe in its CPU placement, with absolute paths and no bai option at all."""
    actor = workspace / "stock-actor"
    if not (actor / "config.json").is_file():
        subprocess.run([str(VENV_BIN / "mergekit-yaml"), "merge.yaml", str(actor)], cwd=workspace,
                       check=True, capture_output=True, timeout=600)

    def argv(run_name: str) -> list[str]:
        env = make_env(run_name, DRY_RUN="1", SKIP_MERGE="1", ACTOR=str(actor),
                         PROMPT_DATA=str(workspace / "prompts.jsonl"),
                         REWARD_PY=str(workspace / "rewards_len.py"),
                         SAVE_ROOT=str(workspace / "runs"), **SMALL)
        out = subprocess.run(["bash", str(RECIPES / "reinforce_pp_bai_7b.sh"), *ARGS], env=env,
                             cwd=workspace, capture_output=True, check=True, timeout=60)
        args = out.stdout.decode().split("\0")[:-1]
        assert "--bai.cpu" in args
        return [a for a in args if not a.startswith("--bai.")] + list(NO_REFERENCE)

    return argv


def launch(run_command, make_env, argv, run_name, **env):
    full = make_env(run_name, **STOCK_ENV, **env)
    return run_command([sys.executable, "-m", "openrlhf.cli.train_ppo_ray", *argv], run_name,
                       full)


def tb_tags(run) -> set[str]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags: set[str] = set()
    for events in run.tensorboard.rglob("events.out.tfevents.*"):
        acc = EventAccumulator(str(events.parent), size_guidance={"scalars": 0})
        acc.Reload()
        tags.update(acc.Tags()["scalars"])
    return tags


def test_stock_launch_writes_the_jsonl_and_tensorboard_keys(job):
    run, _ = job
    rows = run.rows()
    assert [r["step"] for r in rows] == [1, 2]
    assert all("bai/response_length/mean" in r for r in rows)
    assert rows[-1]["bai/detector/length_baseline"] > 0  # BAI_BASELINE_STEPS=2 took effect
    tags = tb_tags(run)
    assert "train/bai/response_length/mean" in tags and "train/bai/detector/length_collapse" in tags
    active = [line for line in run.log.splitlines() if "bai: hooks active" in line]
    assert len(active) == 1 and "BAI_DISABLE=1" in active[0]  # one INFO line, in the driver


def test_bai_disable_leaves_openrlhf_unchanged(run_command, make_env, stock, job):
    run = launch(run_command, make_env, [*stock("stock-off"), *ONE_STEP], "stock-off",
                 BAI_DISABLE="1")
    assert run.rc == 0, tail(run.log)
    assert not run.jsonl.exists()
    tags = tb_tags(run)
    assert not any("bai/" in t for t in tags)
    assert tags == {t for t in tb_tags(job[0]) if "bai/" not in t}  # OpenRLHF's own logs
    assert "bai: hooks active" not in run.log


def test_a_bad_value_is_one_line_and_training_completes(run_command, make_env, stock):
    run = launch(run_command, make_env, [*stock("stock-bad"), *ONE_STEP], "stock-bad",
                 BAI_COLLAPSE_DROP="lots")
    assert run.rc == 0, tail(run.log)
    lines = [line for line in run.log.splitlines() if "BAI_COLLAPSE_DROP='lots'" in line]
    assert len(lines) == 1 and "hooks are OFF" in lines[0], lines
    assert not run.jsonl.exists()
    assert not any("bai/" in t for t in tb_tags(run))
    assert (run.out_dir / "config.json").is_file()  # the trained actor was saved


def _kill_tree(sid: int) -> None:
    """Every process of session `sid` and their descendants (the job driver has its own)."""
    for _ in range(3):
        pids = set(session_pids(sid))
        for pid in list(pids):
            try:
                pids.update(c.pid for c in psutil.Process(pid).children(recursive=True))
            except psutil.Error:
                pass
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        time.sleep(1)


@pytest.fixture(scope="module")
def job(run_command, stock, tmp_path_factory):
    """The stock command through `ray job submit` to a head on 127.0.0.1: (run, findings of
    the head's own audit)."""
    tmp_path = tmp_path_factory.mktemp("job-head")
    port, dash = free_port(), free_port()
    # every port of its own: Ray's fixed defaults (dashboard agent, metrics) would collide
    # with another Ray on this machine
    ports = ["--dashboard-agent-listen-port", "--dashboard-agent-grpc-port",
             "--metrics-export-port", "--ray-client-server-port", "--runtime-env-agent-port"]
    extra = [x for flag in ports for x in (flag, str(free_port()))]
    env = dict(os.environ, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", RAY_USAGE_STATS_ENABLED="0",
               PATH=f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    # the head's own processes (API server, job supervisor, workers) audited too; in the smoke
    # mode its API server probes no cloud metadata server and reports nothing (ray_offline)
    head_audit = audit_folder("job-head")
    head_env = audit_env({**env, "BAI_CPU_SMOKE_TEST": "1"}, head_audit)
    temp = Path("/tmp") / f"bai-job-{os.getpid()}"  # Ray's socket paths must stay short
    head = subprocess.Popen(
        [str(VENV_BIN / "ray"), "start", "--head", "--block", "--node-ip-address", "127.0.0.1",
         "--port", str(port), "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dash),
         "--include-dashboard", "true", "--num-gpus", "3", "--num-cpus", "4",
         "--temp-dir", str(temp), "--disable-usage-stats", *extra],
        env=head_env, cwd=tmp_path, stdout=open(tmp_path / "ray-start.log", "w"),  # noqa: SIM115
        stderr=subprocess.STDOUT, start_new_session=True)
    try:
        address = f"http://127.0.0.1:{dash}"
        deadline = time.monotonic() + 180
        while True:  # the dashboard's job API answers once the head is up
            probe = subprocess.run([str(VENV_BIN / "ray"), "job", "list", "--address", address],
                                   env=env, capture_output=True, timeout=60)
            if probe.returncode == 0:
                break
            alive = head.poll() is None
            assert time.monotonic() < deadline and alive, (tmp_path / "ray-start.log").read_text()
            time.sleep(3)
        runtime_env = {"env_vars": {**STOCK_ENV, "BAI_BUCKET_WIDTH": "10", "HF_HUB_OFFLINE": "1"}}
        run = run_command(
            [str(VENV_BIN / "ray"), "job", "submit", "--address", address, "--runtime-env-json",
             json.dumps(runtime_env), "--", sys.executable, "-m", "openrlhf.cli.train_ppo_ray",
             *stock("stock-job")], "stock-job", env)
    finally:
        _kill_tree(head.pid)
        shutil.rmtree(temp, ignore_errors=True)
    assert run.rc == 0, tail(run.log)
    return run, audit_findings(head_audit)


def test_ray_job_submit_to_a_loopback_head(job):
    run, head_findings = job
    found = run.sockets + head_findings
    assert found == [], "\n".join(found)
    rows = run.rows()
    assert [r["step"] for r in rows] == [1, 2]
    # the job's runtime env carried BAI_BUCKET_WIDTH=10: 10-token reward-by-length buckets
    assert "bai/reward_by_length/0000-0010/count" in rows[0]
    assert "bai/reward_by_length/0000-0100/count" not in rows[0]
    assert "train/bai/reward_by_length/0000-0010/count" in tb_tags(run)
