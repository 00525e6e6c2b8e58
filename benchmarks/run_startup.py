"""Start-up of one CPU-mode OpenRLHF run (bai-train --bai.cpu), three ways side by side.

    python benchmarks/run_startup.py [--rounds 3] [--out bench-out/startup]

A one-step REINFORCE++ run of the tiny random family through the shipped recipe
(recipes/openrlhf/reinforce_pp_bai_7b.sh, CPU_SMOKE=1), which is almost all start-up:
- `vllm-mp`: vLLM's own default on CPU, its engine core and a worker process of their own
  (VLLM_ENABLE_V1_MULTIPROCESSING=1, what the CPU mode did before);
- `cpu-mode`: the CPU mode as shipped (the worker inside the engine core process);
- `shared-head`: the same, every run joining one Ray head on 127.0.0.1 started once
  (RAY_ADDRESS), as a sweep of runs could.
The first two run in turn, round after round, then the shared-head rounds (a run that joins a
head leaves processes behind in it, measured: they slowed every later run, of any kind). Per
run: wall seconds and the busy CPU-seconds of the whole machine (/proc/stat; Ray's workers are
not children of the run, so rusage misses them). Prints medians, and each one's ratio to
`cpu-mode` (run it on an idle machine).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
RECIPE = REPO / "recipes" / "openrlhf" / "reinforce_pp_bai_7b.sh"
REWARD = '''import torch


def reward_func(queries, prompts, labels, **kwargs):
    r = torch.tensor([min(len(q) - len(p), 200) / 200.0 for q, p in zip(queries, prompts)])
    return {"rewards": r, "scores": r.clone(), "extra_logs": {}}
'''


def busy_ticks() -> int:
    with open("/proc/stat", encoding="ascii") as fh:
        fields = [int(x) for x in fh.readline().split()[1:]]
    return sum(fields) - fields[3] - fields[4]  # all but idle and iowait


def workspace(out: Path) -> Path:
    """Tiny family, stock-merged actor, 16 prompts, a length reward (once)."""
    if (out / "actor" / "config.json").is_file():
        return out
    from bai_demo.toy_models import tiny_merge_recipe, write_tiny_family

    out.mkdir(parents=True, exist_ok=True)
    write_tiny_family(out / "fam")
    (out / "merge.yaml").write_text(tiny_merge_recipe())
    (out / "reward.py").write_text(REWARD)
    with open(out / "prompts.jsonl", "w", encoding="utf-8") as fh:
        for i in range(16):
            fh.write(json.dumps({"prompt": f"What is {i} + {i}?", "label": str(2 * i)}) + "\n")
    subprocess.run([str(BIN / "mergekit-yaml"), "merge.yaml", "actor", "--quiet"], cwd=out,
                   check=True)
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop(proc: subprocess.Popen) -> None:
    """The process and everything in its session (Ray, vLLM)."""
    for _ in range(3):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            break
        time.sleep(0.5)
    proc.wait()


def one_run(ws: Path, name: str, extra_env: dict[str, str]) -> tuple[float, float]:
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
               HF_HUB_OFFLINE="1", CPU_SMOKE="1", SKIP_MERGE="1", ACTOR=str(ws / "actor"),
               PROMPT_DATA=str(ws / "prompts.jsonl"), REWARD_PY=str(ws / "reward.py"),
               SAVE_ROOT=str(ws / "runs"), RUN_NAME=name, PROMPT_MAX_LEN="64",
               MAX_NEW_TOKENS="32", N_SAMPLES="4", ROLLOUT_BATCH_SIZE="8",
               TRAIN_BATCH_SIZE="16", SAVE_STEPS="1000", **extra_env)
    shutil.rmtree(ws / "runs" / name, ignore_errors=True)
    argv = ["bash", str(RECIPE), "--rollout.micro_batch_size", "8", "--train.micro_batch_size",
            "8", "--data.max_samples", "8", "--algo.kl.init_coef", "0"]
    ticks, start = busy_ticks(), time.perf_counter()
    with open(ws / f"{name}.log", "w", encoding="utf-8") as log:
        proc = subprocess.Popen(argv, cwd=ws, env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            code = proc.wait(timeout=900)
        finally:
            stop(proc)
    wall = time.perf_counter() - start
    cpu = (busy_ticks() - ticks) / os.sysconf("SC_CLK_TCK")
    if code != 0:
        raise SystemExit(f"{name}: exit {code}; see {ws / f'{name}.log'}")
    return wall, cpu


def start_head(ws: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    temp = Path("/tmp") / f"bai-bench-ray-{os.getpid()}"
    env = dict(os.environ, BAI_CPU_SMOKE_TEST="1", RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0",
               RAY_USAGE_STATS_ENABLED="0")
    ports = [x for flag in ("--dashboard-agent-listen-port", "--dashboard-agent-grpc-port",
                            "--metrics-export-port", "--runtime-env-agent-port")
             for x in (flag, str(free_port()))]
    head = subprocess.Popen(
        [str(BIN / "ray"), "start", "--head", "--block", "--node-ip-address", "127.0.0.1",
         "--port", str(port), "--num-gpus", "4", "--num-cpus", "8", "--include-dashboard",
         "false", "--disable-usage-stats", "--temp-dir", str(temp), *ports],
        env=env, stdout=open(ws / "head.log", "w"), stderr=subprocess.STDOUT,  # noqa: SIM115
        start_new_session=True)
    deadline = time.monotonic() + 120
    while "Ray runtime started" not in (ws / "head.log").read_text(errors="replace"):
        if time.monotonic() > deadline or head.poll() is not None:
            stop(head)
            raise SystemExit(f"the Ray head did not start; see {ws / 'head.log'}")
        time.sleep(1)
    return head, f"127.0.0.1:{port}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--out", type=Path, default=REPO / "bench-out" / "startup")
    args = p.parse_args()
    ws = workspace(args.out.resolve())
    one_run(ws, "warm-up", {})  # DeepSpeed's JIT ops and the page cache, once
    times: dict[str, list[tuple[float, float]]] = {"vllm-mp": [], "cpu-mode": [],
                                                   "shared-head": []}

    def measure(way: str, r: int, env: dict[str, str]) -> None:
        times[way].append(one_run(ws, f"{way}-{r}", env))
        print(f"round {r + 1}: {way}: {times[way][-1][0]:.1f} s wall, "
              f"{times[way][-1][1]:.1f} CPU-s", flush=True)

    for r in range(args.rounds):
        measure("vllm-mp", r, {"VLLM_ENABLE_V1_MULTIPROCESSING": "1"})
        measure("cpu-mode", r, {})
    head, address = start_head(ws)
    try:
        for r in range(args.rounds):
            measure("shared-head", r, {"RAY_ADDRESS": address})
    finally:
        stop(head)
    base_wall = statistics.median(t[0] for t in times["cpu-mode"])
    base_cpu = statistics.median(t[1] for t in times["cpu-mode"])
    print(f"\n{'way':<12} {'wall (s)':>9} {'CPU-s':>7} {'wall/cpu-mode':>14} {'CPU/cpu-mode':>13}")
    for way, rows in times.items():
        wall, cpu = statistics.median(t[0] for t in rows), statistics.median(t[1] for t in rows)
        print(f"{way:<12} {wall:9.1f} {cpu:7.1f} {wall / base_wall:14.2f} {cpu / base_cpu:13.2f}")


if __name__ == "__main__":
    main()
