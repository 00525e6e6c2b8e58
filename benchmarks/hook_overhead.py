"""Cost of the bai hooks inside real OpenRLHF steps: the CPU smoke recipe with and without them.

    python benchmarks/hook_overhead.py [--repeats 2] [--episodes 3]

Runs the shipped `recipes/openrlhf/reinforce_pp_bai_7b.sh` in CPU smoke mode on a tiny merged
actor, alternating `bai-train` with the hooks and `bai-train --bai.disable`, in one run. Step
times come from the wall-clock stamps of OpenRLHF's own TensorBoard rows (step to step, the
first step left out); the hooks' own time per step is `bai/perf/hook_ms`, which the monitor
measures around its work (Experience extraction, metrics, detectors) and writes to each row.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
MERGE = """merge_method: bai
base_model: ./fam/base
models:
  - {model: ./fam/instruct, parameters: {weight: 0.5}}
  - {model: ./fam/reasoning, parameters: {weight: 0.5}}
parameters: {base_weight: 0.5}
tokenizer: {source: ./fam/reasoning}
dtype: bfloat16
"""
ENV = {"CPU_SMOKE": "1", "SKIP_MERGE": "1", "ACTOR": "actor", "PROMPT_DATA": "prompts.jsonl",
       "SAVE_ROOT": "runs", "PROMPT_MAX_LEN": "64", "MAX_NEW_TOKENS": "32", "N_SAMPLES": "4",
       "ROLLOUT_BATCH_SIZE": "8", "TRAIN_BATCH_SIZE": "16", "SAVE_STEPS": "1000",
       "HF_HUB_OFFLINE": "1"}
ARGS = ["--rollout.micro_batch_size", "8", "--train.micro_batch_size", "8"]


def workspace(root: Path) -> Path:
    from bai_demo.toy_models import write_tiny_family

    ws = root / "ws"
    if not (ws / "actor" / "config.json").is_file():
        shutil.rmtree(ws, ignore_errors=True)
        write_tiny_family(ws / "fam")
        (ws / "merge.yaml").write_text(MERGE)
        (ws / "prompts.jsonl").write_text("".join(
            json.dumps({"prompt": f"What is {i} + {i}?", "label": str(2 * i)}) + "\n"
            for i in range(16)), encoding="utf-8")
        subprocess.run([str(BIN / "mergekit-yaml"), "merge.yaml", "actor"], cwd=ws, check=True,
                       capture_output=True)
    return ws


def step_times(tb_dir: Path) -> list[float]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = next(tb_dir.rglob("events.out.tfevents.*"))
    acc = EventAccumulator(str(events.parent), size_guidance={"scalars": 0})
    acc.Reload()
    tag = "train/rollout/reward_mean"
    stamps = sorted((e.step, e.wall_time) for e in acc.Scalars(tag))
    return [b[1] - a[1] for a, b in zip(stamps[1:], stamps[2:])]  # the first step left out


def run(ws: Path, name: str, disabled: bool, episodes: int) -> dict:
    shutil.rmtree(ws / "runs" / name, ignore_errors=True)
    env = dict(os.environ, **ENV, RUN_NAME=name, EPISODES=str(episodes),
               PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    argv = ["bash", str(REPO / "recipes/openrlhf/reinforce_pp_bai_7b.sh"), *ARGS]
    if disabled:
        argv.append("--bai.disable")
    start = time.perf_counter()
    with open(ws / f"{name}.log", "w", encoding="utf-8") as log:
        proc = subprocess.run(argv, cwd=ws, env=env, stdout=log, stderr=subprocess.STDOUT,
                              start_new_session=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{name}: exit {proc.returncode}, see {ws / (name + '.log')}")
    out = ws / "runs" / name
    jsonl = out / "bai_metrics.jsonl"
    rows = [json.loads(x) for x in jsonl.read_text().splitlines()] if jsonl.is_file() else []
    hook_ms = [r["bai/perf/hook_ms"] for r in rows if "bai/perf/hook_ms" in r]
    return {"wall": wall, "steps": step_times(out / "tensorboard"), "hook_ms": hook_ms}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--episodes", type=int, default=3, help="2 steps each")
    ap.add_argument("--out", type=Path, default=REPO / "bench-out" / "hooks")
    args = ap.parse_args()
    ws = workspace(args.out)
    results: dict[str, list[dict]] = {"bai hooks": [], "--bai.disable": []}
    for r in range(args.repeats):
        for label in results:
            results[label].append(run(ws, f"{label.strip('-').replace(' ', '-')}-{r}",
                                      label == "--bai.disable", args.episodes))
    print(f"| variant ({args.repeats} runs each, interleaved) | median step (s) | best wall (s) |")
    print("|---|---:|---:|")
    med = {}
    for label, runs in results.items():
        med[label] = statistics.median(s for x in runs for s in x["steps"])
        print(f"| {label} | {med[label]:.2f} | {min(x['wall'] for x in runs):.1f} |")
    ratio = med["bai hooks"] / med["--bai.disable"]
    hook = statistics.median(ms for x in results["bai hooks"] for ms in x["hook_ms"])
    print(f"\nstep time with / without hooks: {ratio:.3f}")
    print(f"hooks' own time per step (bai/perf/hook_ms, median): {hook:.2f} ms = "
          f"{hook / 1e3 / med['bai hooks'] * 100:.3f} % of a step")


if __name__ == "__main__":
    main()
