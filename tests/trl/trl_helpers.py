"""Helpers of the TRL tests: real TRL runs on CPU and readers of their JSONL/TensorBoard output."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

MAX_LEN = 24  # max_completion_length of the runs


def prompts(n: int = 64) -> Any:
    from datasets import Dataset

    return Dataset.from_list([{"prompt": f"What is {i} + {i}?", "answer": str(2 * i)}
                              for i in range(n)])


def train(kind: str, actor: Path, out: Path, reward_funcs: list, callbacks: list,
          steps: int, resume: str | None = None, **overrides: Any):
    """A real TRL run (kind "grpo" or "rloo") on CPU; returns the trainer after train()."""
    from trl import GRPOConfig, GRPOTrainer, RLOOConfig, RLOOTrainer

    config_cls, trainer_cls = {"grpo": (GRPOConfig, GRPOTrainer),
                               "rloo": (RLOOConfig, RLOOTrainer)}[kind]
    options = dict(output_dir=str(out), max_steps=steps, per_device_train_batch_size=16,
                   num_generations=8, max_completion_length=MAX_LEN, learning_rate=3e-2,
                   lr_scheduler_type="constant", logging_steps=1, report_to=["tensorboard"],
                   save_strategy="no", beta=0.0, seed=0, temperature=1.0, bf16=False,
                   use_cpu=True, use_vllm=False, disable_tqdm=True)
    options.update(overrides)
    trainer = trainer_cls(model=str(actor), reward_funcs=reward_funcs,
                          args=config_cls(**options), train_dataset=prompts(),
                          callbacks=callbacks)
    trainer.train(resume_from_checkpoint=resume)
    return trainer


def rows(out: Path) -> list[dict]:
    path = out / "bai_metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def tensorboard(out: Path) -> dict[str, dict[int, float]]:
    """Every scalar TRL's TensorBoard callback wrote under <out>/runs: tag -> {step: value}."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    dirs = sorted({p.parent for p in (out / "runs").rglob("events.out.tfevents.*")})
    assert len(dirs) == 1, dirs
    acc = EventAccumulator(str(dirs[0]), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: {int(e.step): float(e.value) for e in acc.Scalars(tag)}
            for tag in acc.Tags()["scalars"]}


# `bai/` keys every step's row must have (GRPO and RLOO, a reward visible to bai, a tokenizer
# with `</think>`); after `baseline_steps` (3) steps also BASELINE_KEYS.
ROW_KEYS = {f"bai/{k}" for k in (
    "response_length/mean", "response_length/median", "response_length/p10",
    "response_length/p90", "response_length/std", "response_length/min", "response_length/max",
    "response_length/clip_ratio", "response_length/eos_ratio", "think/closed_ratio",
    "think/think_length_mean", "think/answer_length_mean", "reward/mean", "reward/std",
    "reward/zero_spread_group_ratio", "reward_by_length/0000-0100/count",
    "reward_by_length/0000-0100/mean", "detector/length_collapse", "detector/reward_dip",
    "detector/reward_recovered")}
BASELINE_KEYS = {"bai/response_length/ratio_to_init", "bai/reward/delta_from_init",
                 "bai/detector/length_baseline", "bai/detector/reward_baseline"}


class BaiLogs(logging.Handler):
    """Collects the records of the "bai" logger while installed (a `with` block)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def __enter__(self) -> BaiLogs:
        log = logging.getLogger("bai")
        self._level = log.level
        log.setLevel(logging.INFO)
        log.addHandler(self)
        return self

    def __exit__(self, *exc: object) -> None:
        log = logging.getLogger("bai")
        log.removeHandler(self)
        log.setLevel(self._level)

    def messages(self, text: str = "", level: int = logging.DEBUG) -> list[str]:
        return [r.getMessage() for r in self.records
                if text in r.getMessage() and r.levelno >= level]
