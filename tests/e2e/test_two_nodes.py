"""Issue 16: a two-node Ray cluster (on 127.0.0.1): the GPU roles run on the other node, the
trainer and its files (bai_metrics.jsonl, TensorBoard) on the head, where the run started.

The reward is a reward model with its own (character-level) tokenizer on the response text
(TEXT_RM, openrlhf_patches/text_rm_reward.py), scored in the rollout worker on the other node."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from sockets import audit_env, audit_findings, audit_folder, session_pids

HERE = Path(__file__).resolve().parent
SMALL = {"N_SAMPLES": "4", "ROLLOUT_BATCH_SIZE": "8", "TRAIN_BATCH_SIZE": "16", "LR": "1e-2",
         "TEXT_RM": "text-rm"}
MICRO = ("--rollout.micro_batch_size", "8", "--train.micro_batch_size", "8")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cluster")
    address = tmp / "address"
    temp = Path("/tmp") / f"bai-2n-{os.getpid()}"  # Ray's socket paths must stay short
    # the cluster's processes (API server, raylets, workers: the trainer runs there) audited;
    # in the smoke mode its API server probes no cloud metadata server (ray_offline)
    audit = audit_folder("cluster")
    env = audit_env({**os.environ, "BAI_CPU_SMOKE_TEST": "1"}, audit)
    proc = subprocess.Popen([sys.executable, str(HERE / "cluster_two_nodes.py"), str(address),
                             str(temp)], stdout=open(tmp / "cluster.log", "w"),  # noqa: SIM115
                            stderr=subprocess.STDOUT, start_new_session=True, env=env)
    try:
        deadline = time.monotonic() + 240
        while not address.exists():
            assert proc.poll() is None and time.monotonic() < deadline, (
                (tmp / "cluster.log").read_text()[-3000:])
            time.sleep(1)
        yield SimpleNamespace(address=address.read_text().strip(), audit=audit)
    finally:
        for _ in range(3):
            for pid in session_pids(proc.pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
            time.sleep(1)
        shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture(scope="module")
def two_nodes(cluster, run_recipe):
    run = run_recipe("reinforce_pp_bai_7b.sh", "two-nodes", MICRO, RAY_ADDRESS=cluster.address,
                     **SMALL)
    assert run.rc == 0, "\n".join(run.log.splitlines()[-60:])
    return run


def test_trainer_and_its_files_are_on_the_head(cluster, two_nodes):
    run = two_nodes
    assert [r["step"] for r in run.rows()] == [1, 2]
    assert list(run.tensorboard.rglob("events.out.tfevents.*"))
    head = re.search(r"bai: hooks active .* by the trainer on this node \((\w+)\)", run.log)
    trainer = re.search(r"\(PPOTrainer pid=\d+\).*bai: metrics -> .* on Ray node (\w+)\)",
                        run.log)
    assert head and trainer, "node ids not logged"
    assert trainer.group(1) == head.group(1)  # the trainer actor ran on the driver's node
    found = run.sockets + audit_findings(cluster.audit)
    assert found == [], "\n".join(found)


def test_rewarded_by_a_reward_model_with_its_own_tokenizer(two_nodes, workspace):
    line = [x for x in two_nodes.log.splitlines() if x.startswith("[bai] REINFORCE++: reward")]
    assert len(line) == 1 and "text-rm on the response text (its own tokenizer)" in line[0]
    # the RM's scores are the rewards the monitor saw: not the constant of a failed reward call
    rows = two_nodes.rows()
    rewards = [r["bai/reward/mean"] for r in rows]
    assert all(r is not None for r in rewards) and len(set(rewards)) == len(rewards), rewards
    assert all(r["bai/reward/std"] > 0 for r in rows)


def test_a_model_path_missing_on_the_nodes_is_one_line_before_training(cluster, run_recipe,
                                                                     tmp_path):
    # one machine cannot hide a path from one node only: here no node has it, and the check
    # asks each node on its own (the line names both)
    missing = tmp_path / "nowhere" / "bai-actor"
    run = run_recipe("reinforce_pp_bai_7b.sh", "two-nodes-missing",
                     (*MICRO, "--actor.model_name_or_path", str(missing)),
                     RAY_ADDRESS=cluster.address, **SMALL)
    assert run.rc == 2, "\n".join(run.log.splitlines()[-60:])
    lines = [line for line in run.log.splitlines() if "does not exist on Ray node(s)" in line]
    assert len(lines) == 1 and str(missing) in lines[0], lines
    assert len(re.search(r"node\(s\) ([\w, ]+):", lines[0]).group(1).split(", ")) == 2
    assert not run.jsonl.exists() and "PPOTrainer pid=" not in run.log  # nothing trained
