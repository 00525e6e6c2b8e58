"""End-to-end fixtures: a tiny BAI family, a shipped recipe run through `bai-train --bai.cpu`.

Every run is a real subprocess (`bash recipes/openrlhf/<recipe>.sh` with CPU_SMOKE=1): stock
`mergekit-yaml` merges the actor when it is missing, then OpenRLHF's own `train_ppo_ray` runs with
vLLM (CPU build) generation, DeepSpeed training and the weight sync back to vLLM. Paths handed to
the recipe are relative to its working folder, as a user's would be.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

pytest.importorskip("openrlhf")
pytest.importorskip("vllm")

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from sockets import (  # noqa: E402
    audit_env,
    audit_findings,
    audit_folder,
    audited_commands,
    non_loopback_sockets,
    session_pids,
)
from tiny_rm import write_char_rm  # noqa: E402

REPO = HERE.parent.parent
RECIPES = REPO / "recipes" / "openrlhf"
VENV_BIN = Path(sys.executable).parent
RUN_TIMEOUT = 900
RAY_CLUSTER_FILE = Path("/tmp/ray/ray_current_cluster")



@dataclass
class Run:
    """One finished recipe run."""

    rc: int
    log: str
    out_dir: Path
    seconds: float
    # outside 127.0.0.0/8: the run's sockets seen by the 1-second sampling, and every connect,
    # sendto, listen, UDP bind and host lookup its Python processes made (the audit, with stacks)
    sockets: list[str]
    audited: list[str]  # command lines of the Python processes the audit covered

    @property
    def jsonl(self) -> Path:
        return self.out_dir / "bai_metrics.jsonl"

    @property
    def tensorboard(self) -> Path:
        return self.out_dir / "tensorboard"

    def rows(self) -> list[dict]:
        return [json.loads(line) for line in self.jsonl.read_text().splitlines() if line.strip()]


def _kill(pids: set[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


@pytest.fixture(scope="session")
def workspace(tmp_path_factory) -> Path:
    """Working folder of the runs: tiny family, prompts, merge recipe, test rewards, a text RM."""
    from bai_demo.toy_models import tiny_merge_recipe, write_tiny_family

    root = tmp_path_factory.mktemp("e2e")
    write_tiny_family(root / "fam")
    with open(root / "prompts.jsonl", "w", encoding="utf-8") as fh:
        for i in range(16):
            fh.write(json.dumps({"prompt": f"What is {i} + {i}?", "label": str(2 * i)}) + "\n")
    (root / "merge.yaml").write_text(tiny_merge_recipe())
    for name in ("rewards_len.py", "rewards_short.py", "rewards_schedule.py"):
        shutil.copy(HERE / name, root / name)
    write_char_rm(root / "text-rm")  # a reward model with its own tokenizer (TEXT_RM)
    return root


def recipe_env(workspace: Path, run_name: str, **env: str) -> dict[str, str]:
    """The environment of a CPU smoke-test recipe run in `workspace`."""
    full_env = dict(os.environ)
    full_env.update({
        "PATH": f"{VENV_BIN}{os.pathsep}{full_env.get('PATH', '')}",
        "HF_HUB_OFFLINE": "1",
        "CPU_SMOKE": "1",
        "ACTOR": "actor",                 # relative: the recipe's working folder
        "MERGE_CONFIG": "merge.yaml",
        "PROMPT_DATA": "prompts.jsonl",
        "SAVE_ROOT": "runs",
        "RUN_NAME": run_name,
        "PROMPT_MAX_LEN": "64",
        "MAX_NEW_TOKENS": "32",
        "SAVE_STEPS": "1",
        "BAI_TEST_ACTOR": str(workspace / "actor"),
    })
    full_env.update(env)
    return full_env


@pytest.fixture(scope="session")
def make_env(workspace):
    """make_env(run_name, **env): the environment of a CPU smoke-test recipe run."""
    return lambda run_name, **env: recipe_env(workspace, run_name, **env)


@pytest.fixture(scope="session")
def run_command(workspace):
    """run_command(argv, run_name, env) -> Run: a process in its own session in `workspace`,
    its sockets audited while it runs; every process of that session is stopped after."""

    calls = itertools.count(1)

    def run(argv: list[str], run_name: str, env: dict[str, str]) -> Run:
        log_path = workspace / f"{next(calls):02d}-{run_name}.log"  # a resume keeps its own
        audit = audit_folder(log_path.stem)
        env = audit_env(env, audit)
        start = time.monotonic()
        with open(log_path, "w", encoding="utf-8") as log:
            proc = subprocess.Popen(argv, cwd=workspace, env=env, stdout=log,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True)
            seen: list[str] = []
            done = threading.Event()

            def watch() -> None:  # a socket audit of the run's session every second
                while not done.wait(1.0):
                    for line in non_loopback_sockets(set(session_pids(proc.pid))):
                        if line not in seen:
                            seen.append(line)

            watcher = threading.Thread(target=watch, daemon=True)
            watcher.start()
            try:
                rc = proc.wait(timeout=RUN_TIMEOUT)
            except subprocess.TimeoutExpired:
                rc = -9
            finally:
                done.set()
                watcher.join()
                # the run's own session only: never another test's or the user's Ray
                for _ in range(3):
                    left = set(session_pids(proc.pid))
                    if not left:
                        break
                    _kill(left)
                    time.sleep(1)
        text = log_path.read_text(errors="replace")
        return Run(rc=rc, log=text, out_dir=workspace / "runs" / run_name,
                   seconds=time.monotonic() - start, sockets=seen + audit_findings(audit),
                   audited=audited_commands(audit))

    return run


@pytest.fixture(scope="session")
def run_recipe(workspace, run_command):
    """run_recipe(recipe, run_name, args=[...], **env) -> Run; stops every process it started."""

    def run(recipe: str, run_name: str, args: tuple[str, ...] = (), **env: str) -> Run:
        return run_command(["bash", str(RECIPES / recipe), *args], run_name,
                           recipe_env(workspace, run_name, **env))

    return run


@pytest.fixture(scope="session")
def stale_ray_cluster_file():
    """Leave a stale /tmp/ray/ray_current_cluster, as a killed Ray head does; restore after."""
    saved = RAY_CLUSTER_FILE.read_text() if RAY_CLUSTER_FILE.exists() else None
    RAY_CLUSTER_FILE.parent.mkdir(parents=True, exist_ok=True)
    RAY_CLUSTER_FILE.write_text("127.0.0.1:1\n")  # nothing listens there
    yield RAY_CLUSTER_FILE
    if saved is None:
        RAY_CLUSTER_FILE.unlink(missing_ok=True)
    else:
        RAY_CLUSTER_FILE.write_text(saved)
