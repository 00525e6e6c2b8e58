"""Train one actor through a shipped launch recipe (its own process session), or reuse its run."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from bai_core.constants import JSONL_NAME

LOG = logging.getLogger(__name__)
DONE_MARKER = "bai_compare_done.json"
EXIT_EARLY_STOP = 3  # bai-train: the collapse detector stopped the run (a finished run)
POLL_SECONDS = 2.0


@dataclass(frozen=True)
class RunPlan:
    """What every actor of one comparison shares: recipe, seed, step budget, data, options."""

    recipe: Path
    steps: int
    seed: int = 42
    cpu: bool = False
    prompts: str | None = None
    reward: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    extra_args: tuple[str, ...] = ()
    timeout: float | None = None

    def fingerprint(self, actor: str) -> str:
        """Hash of everything that decides a run: a finished run with another one is stale."""
        recipe_text = self.recipe.read_bytes() if self.recipe.is_file() else b""
        blob = json.dumps({
            "actor": actor, "recipe": str(self.recipe), "recipe_sha": hashlib.sha256(
                recipe_text).hexdigest(), "steps": self.steps, "seed": self.seed,
            "cpu": self.cpu, "prompts": self.prompts, "reward": self.reward,
            "env": dict(sorted(self.env.items())), "extra": list(self.extra_args),
        }, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


@dataclass
class RunResult:
    """Outcome of one actor's run."""

    name: str
    actor: str
    run_dir: Path
    log: Path
    ok: bool
    reused: bool = False
    early_stop: bool = False
    returncode: int | None = None
    seconds: float = 0.0
    error: str | None = None
    actor_name: str | None = None  # the actor this run trains (its name is the run's otherwise)
    seed: int | None = None

    @property
    def actor_label(self) -> str:
        return self.actor_name or self.name


def _venv_path() -> str:
    bin_dir = str(Path(sys.executable).parent)
    rest = os.environ.get("PATH", "")
    return bin_dir if not rest else f"{bin_dir}{os.pathsep}{rest}"


def recipe_env(plan: RunPlan, actor: str, save_root: Path, run_name: str) -> dict[str, str]:
    """The environment a recipe reads (see recipes/openrlhf/common.sh); `plan.env` wins last."""
    env = dict(os.environ)
    env.update({"PATH": _venv_path(), "ACTOR": actor, "SKIP_MERGE": "1",
                "SAVE_ROOT": str(save_root), "RUN_NAME": run_name})
    if plan.cpu:
        env["CPU_SMOKE"] = "1"
    if plan.prompts:
        env["PROMPT_DATA"] = plan.prompts
    if plan.reward:
        env["REWARD_PY"] = plan.reward
    env.update(plan.env)
    return env


def dry_run_argv(plan: RunPlan, cwd: Path) -> list[str]:
    """The bai-train argv the recipe would run (its DRY_RUN=1 mode), to read its batch size."""
    env = recipe_env(plan, "dry-run-actor", cwd / "runs", "dry-run")
    env["DRY_RUN"] = "1"
    proc = subprocess.run(["bash", str(plan.recipe), *plan.extra_args], cwd=cwd, env=env,
                          capture_output=True, timeout=120)
    if proc.returncode != 0:
        tail = proc.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
        raise ValueError(f"{plan.recipe}: DRY_RUN=1 failed (exit {proc.returncode}): {tail[0]}")
    return [a for a in proc.stdout.decode(errors="replace").split("\0") if a]


def budget_args(plan: RunPlan, rollout_batch: int) -> list[str]:
    """Fix the step budget and seed: one episode over `steps x rollout batch` prompts (OpenRLHF
    takes one step per rollout batch), the shared training seed."""
    return ["--train.num_episodes", "1", "--data.max_samples", str(plan.steps * rollout_batch),
            "--train.seed", str(plan.seed)]


def completed_steps(run_dir: Path) -> int:
    """Highest step logged in the run's bai_metrics.jsonl (0 when none)."""
    path = run_dir / JSONL_NAME
    if not path.is_file():
        return 0
    top = 0
    for line in path.read_text(errors="replace").splitlines():
        try:
            step = json.loads(line).get("step")
        except (ValueError, AttributeError):
            continue
        if isinstance(step, int):
            top = max(top, step)
    return top


def is_finished(run_dir: Path, plan: RunPlan, actor: str) -> bool:
    """A finished run: a done marker of the same plan, and the metrics of the step budget (or
    of an early stop the marker records)."""
    try:
        marker = json.loads((run_dir / DONE_MARKER).read_text())
    except (OSError, ValueError):
        return False
    if marker.get("fingerprint") != plan.fingerprint(actor):
        return False
    return marker.get("early_stop") or completed_steps(run_dir) >= plan.steps


def _session_pids(sid: int) -> set[int]:
    """Pids of the processes of session `sid` (the run and all it started: Ray, vLLM)."""
    pids = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if len(fields) > 3 and int(fields[3]) == sid:
            pids.add(int(entry.name))
    return pids


def stop_session(sid: int) -> None:
    """SIGKILL what is left of the run's own session; never another process."""
    for _ in range(3):
        left = _session_pids(sid) if Path("/proc").is_dir() else set()
        if not left:
            return
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        time.sleep(1)


def failure_reason(log: Path, returncode: int | None) -> str:
    """One line: the exit status and the log's last error-looking line."""
    try:
        lines = [ln.strip() for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        lines = []
    keys = ("error", "Error", "Traceback", "No such file", "not found")
    errors = [ln for ln in lines if any(k in ln for k in keys) and "Traceback" not in ln]
    last = (errors or lines or ["(empty log)"])[-1]
    status = "timed out" if returncode is None else f"exit {returncode}"
    return f"{status}: {last[:300]}"


def train_actor(name: str, actor: str, plan: RunPlan, out_dir: Path, extra: Sequence[str],
                position: str = "", echo: Callable[[str], None] = LOG.info) -> RunResult:
    """Run the recipe for one actor into out_dir/runs/name (reused when finished); the run and
    everything it starts live in one process session, stopped afterwards."""
    save_root = out_dir / "runs"
    run_dir, log = save_root / name, out_dir / "logs" / f"{name}.log"
    if is_finished(run_dir, plan, actor):
        echo(f"{position}{name}: finished earlier ({completed_steps(run_dir)} steps), reused")
        return RunResult(name, actor, run_dir, log, ok=True, reused=True)
    if run_dir.exists():
        shutil.rmtree(run_dir)  # a stale or unfinished run of this comparison: start over
    log.parent.mkdir(parents=True, exist_ok=True)
    save_root.mkdir(parents=True, exist_ok=True)
    argv = ["bash", str(plan.recipe), *plan.extra_args, *extra]
    env = recipe_env(plan, actor, save_root, name)
    start = time.monotonic()
    returncode: int | None = None
    bar = tqdm(total=plan.steps, desc=f"{position}{name}", unit="step", leave=True)
    with open(log, "w", encoding="utf-8") as fh:
        proc = subprocess.Popen(argv, cwd=out_dir, env=env, stdout=fh, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            while True:
                try:
                    returncode = proc.wait(timeout=POLL_SECONDS)
                    break
                except subprocess.TimeoutExpired:
                    pass
                bar.update(min(completed_steps(run_dir), plan.steps) - bar.n)
                if plan.timeout and time.monotonic() - start > plan.timeout:
                    break
        finally:
            stop_session(proc.pid)
            if returncode is None:
                proc.wait()
    done = completed_steps(run_dir)
    bar.update(min(done, plan.steps) - bar.n)
    bar.close()
    seconds = time.monotonic() - start
    early = returncode == EXIT_EARLY_STOP
    ok = returncode == 0 and done >= plan.steps or early and done > 0
    result = RunResult(name, actor, run_dir, log, ok=ok, early_stop=early,
                       returncode=returncode, seconds=seconds)
    if ok:
        marker = {"fingerprint": plan.fingerprint(actor), "actor": actor, "steps": done,
                  "budget": plan.steps, "early_stop": early, "returncode": returncode,
                  "seconds": round(seconds, 1), "argv": argv[1:]}
        (run_dir / DONE_MARKER).write_text(json.dumps(marker, indent=1) + "\n")
        echo(f"{position}{name}: done in {seconds:.0f} s ({done} steps"
             f"{', early stop' if early else ''})")
    else:
        if returncode == 0:
            result.error = (f"exit 0 but only {done} of {plan.steps} steps logged "
                            f"(too few prompts for the budget?)")
        else:
            result.error = failure_reason(log, returncode)
        echo(f"{position}{name}: FAILED after {seconds:.0f} s: {result.error} (log: {log})")
    return result
