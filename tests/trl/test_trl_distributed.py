"""Two processes of one GRPO run (accelerate's MULTI_CPU: gloo on the loopback, the process group
from a FileStore, so nothing listens beyond 127.0.0.1; see trl_dist_run.py): the JSONL rows are
computed over the GLOBAL batch, equal a one-process computation over both processes' samples,
and only the main process writes them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bai_core.config import BaiConfig
from bai_core.metrics import think_end_positions
from bai_core.monitor import BaiMonitor, ResponseBatch, think_close_ids_from_tokenizer

HERE = Path(__file__).resolve().parent
STEPS, PER_PROCESS, GENERATIONS = 3, 8, 4


@pytest.fixture(scope="module")
def dist_run(actor, tmp_path_factory):
    root = tmp_path_factory.mktemp("dist")
    out = root / "run"
    out.mkdir()
    base = {**os.environ, "MASTER_ADDR": "127.0.0.1", "GLOO_SOCKET_IFNAME": "lo",
            "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore",
            "WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2"}
    cmd = [sys.executable, str(HERE / "trl_dist_run.py"), str(actor), str(out), str(STEPS),
           str(root / "pg.store")]
    procs, logs = [], []
    for rank in (0, 1):
        env = {**base, "RANK": str(rank), "LOCAL_RANK": str(rank)}
        logs.append(open(root / f"rank{rank}.log", "w+", encoding="utf-8"))
        procs.append(subprocess.Popen(cmd, env=env, stdout=logs[-1], stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL, start_new_session=True))
    try:
        codes = [p.wait(timeout=480) for p in procs]
    finally:
        for p in procs:  # both ranks and anything they started (their own sessions)
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait()
    text = ""
    for log in logs:
        log.seek(0)
        text += log.read()
        log.close()
    assert codes == [0, 0], text[-4000:]
    return out, text


def expected_rows(actor: Path, samples: Path, tokenizer) -> list[dict]:
    """The rows of one process given both processes' samples (rank 0 first, as TRL gathers)."""
    from transformers import GenerationConfig

    eos = GenerationConfig.from_pretrained(actor).eos_token_id
    end = {*([eos] if isinstance(eos, int) else eos), tokenizer.eos_token_id,
           tokenizer.pad_token_id}
    think = think_close_ids_from_tokenizer(tokenizer)
    monitor = BaiMonitor(BaiConfig(), jsonl_path=None, log_kl=False)
    out = []
    for step in range(1, STEPS + 1):
        parts = [json.loads((samples / f"rank{r}-step{step}.json").read_text()) for r in (0, 1)]
        assert [len(p["ids"]) for p in parts] == [PER_PROCESS, PER_PROCESS]
        ids = [x for p in parts for x in p["ids"]]
        width = max(len(x) for x in ids)
        padded = torch.tensor([x + [0] * (width - len(x)) for x in ids])
        mask = torch.tensor([[1] * len(x) + [0] * (width - len(x)) for x in ids])
        batch = ResponseBatch(
            lengths=torch.tensor([len(x) for x in ids]),
            truncated=torch.tensor([x[-1] not in end for x in ids]),
            think_end=think_end_positions(padded, mask, think),
            rewards=torch.tensor([v for p in parts for v in p["rewards"]], dtype=torch.float32),
            group_ids=torch.arange(len(ids)) // GENERATIONS)
        out.append({"step": step, **monitor.compute(batch, step)})
    return out


def test_rows_are_the_global_batch_and_match_one_process(dist_run, actor, tokenizer):
    out, _ = dist_run
    got = [json.loads(line) for line in (out / "bai_metrics.jsonl").read_text().splitlines()]
    want = expected_rows(actor, out / "samples", tokenizer)
    assert [r["step"] for r in got] == list(range(1, STEPS + 1))  # one writer: no duplicates
    for row, exp in zip(got, want, strict=True):
        assert row["bai/reward_by_length/0000-0100/count"] == 2 * PER_PROCESS
        assert set(row) == set(exp)
        for key, value in exp.items():
            if key.startswith("bai/perf/"):
                continue  # a timing
            assert row[key] == pytest.approx(value, rel=1e-9, abs=1e-9), (row["step"], key)


def test_trls_log_gets_the_global_values(dist_run):
    """log_metric averages over processes: only the main process logs, so no value is halved."""
    out, _ = dist_run
    history = json.loads((out / "samples" / "log_history.json").read_text())
    logged = {h["step"]: h for h in history if "completions/mean_length" in h}
    for line in (out / "bai_metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        entry = logged[row["step"]]
        assert entry["bai/reward_by_length/0000-0100/count"] == 2 * PER_PROCESS
        for key in ("bai/response_length/mean", "bai/reward/mean", "bai/detector/length_collapse"):
            assert entry[key] == pytest.approx(row[key], rel=1e-6), key
        assert entry["bai/response_length/mean"] == pytest.approx(entry["completions/mean_length"])


def test_only_the_main_process_writes(dist_run):
    out, log = dist_run
    opened = [line for line in log.splitlines() if "bai: metrics ->" in line]
    assert len(opened) == 1 and opened[0].startswith("[rank0] bai "), opened
    assert sorted(p.name for p in out.iterdir()) == ["bai_metrics.jsonl", "samples"]
