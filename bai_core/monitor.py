"""Per-run BAI monitor: one step's responses in; `bai/` metrics, detector state, JSONL out."""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

import torch

from bai_core import metrics
from bai_core.config import LENGTH_FIELDS, REWARD_FIELDS, BaiConfig
from bai_core.constants import JSONL_NAME, SAMPLES_NAME, THINK_CLOSE
from bai_core.detectors import LengthCollapseDetector, RewardHockeyStickDetector

logger = logging.getLogger("bai")

__all__ = ["BaiMonitor", "ResponseBatch", "append_row", "default_jsonl", "read_rows",
           "think_close_ids_from_tokenizer"]


def think_close_ids_from_tokenizer(tokenizer: Any, token: str = THINK_CLOSE) -> list[int]:
    """Ids of `token` when it is a single vocabulary entry of `tokenizer`; [] otherwise."""
    try:
        tid = tokenizer.get_vocab().get(token)
    except Exception:  # no tokenizer, or one without a vocabulary
        return []
    unk = getattr(tokenizer, "unk_token_id", None)
    return [] if tid is None or (unk is not None and tid == unk) else [int(tid)]


def default_jsonl(output_dir: str | None) -> str:
    """<output_dir>/bai_metrics.jsonl, absolute (the current folder when None)."""
    return os.path.abspath(os.path.join(output_dir or ".", JSONL_NAME))


@dataclass
class ResponseBatch:
    """One step's responses: one value per response in every tensor, None where unknown.

    A field with another count than `lengths` is dropped (set to None) rather than misaligned.
    `think_end` is the `</think>` offset (metrics.think_end_positions); `group_ids` says which
    responses answer the same prompt.
    """

    lengths: torch.Tensor
    truncated: torch.Tensor | None = None
    think_end: torch.Tensor | None = None
    rewards: torch.Tensor | None = None
    scores: torch.Tensor | None = None
    kl: torch.Tensor | None = None
    group_ids: torch.Tensor | None = None

    def __post_init__(self) -> None:
        self.lengths = self.lengths.reshape(-1).cpu()
        for f in fields(self)[1:]:
            value = getattr(self, f.name)
            if value is not None:
                value = value.reshape(-1).cpu()
                setattr(self, f.name, value if value.numel() == self.lengths.numel() else None)


def append_row(path: str, row: dict[str, Any]) -> None:
    """Append one JSON object as a line (non-finite floats as null); creates the folder."""
    if os.path.dirname(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
    clean = {k: None if isinstance(v, float) and not math.isfinite(v) else v
             for k, v in row.items()}
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(clean, allow_nan=False) + "\n")


def read_rows(path: str) -> list[dict[str, Any]]:
    """All rows of a JSONL file, skipping blank or truncated lines."""
    rows = []
    with open(path, encoding="utf-8") as fh:
        for line in filter(None, map(str.strip, fh)):
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return rows


class BaiMonitor:
    """Metrics, detectors, JSONL output and error-once bookkeeping for one training run."""

    def __init__(self, config: BaiConfig, jsonl_path: str | None = None,
                 log_kl: bool = True) -> None:
        """`log_kl=False` leaves `bai/kl/*` out (when the framework's KL field is not a KL).
        Raises ValueError (naming the `--bai.*` option) for an invalid config."""
        config.validate()
        self.config = config
        self.jsonl_path = jsonl_path
        self.log_kl = log_kl
        self.length = LengthCollapseDetector(**config.detector_kwargs(LENGTH_FIELDS))
        self.reward = RewardHockeyStickDetector(**config.detector_kwargs(REWARD_FIELDS))
        self.step_counter = 0
        self.stop_requested = False
        self._failed: set[str] = set()

    def guard(self, kind: str, exc: BaseException) -> None:
        """Log a metric/detector failure once per kind; never re-raise."""
        if kind not in self._failed:
            self._failed.add(kind)
            logger.warning("bai: %s failed and is skipped (logged once): %r", kind, exc,
                           exc_info=exc)

    def compute(self, batch: ResponseBatch | None, step: int | None,
                started: float | None = None) -> dict[str, float]:
        """All `bai/` keys for one step's batch; each part fails independently. The row also
        gets `bai/perf/hook_ms`: this call's time, from `started` (a `time.perf_counter()`
        the adapter took before building the batch) when given."""
        start = time.perf_counter() if started is None else started
        self.step_counter = step if step is not None else self.step_counter + 1
        if batch is None or batch.lengths.numel() == 0:
            return {}
        out = self._compute(batch, self.step_counter)
        out["bai/perf/hook_ms"] = (time.perf_counter() - start) * 1e3
        self._write(self.step_counter, out)
        return out

    def _compute(self, batch: ResponseBatch, step: int) -> dict[str, float]:
        out: dict[str, float] = {}
        lengths = batch.lengths
        try:
            out.update(metrics.compute_response_metrics(
                lengths, truncated=batch.truncated, think_end=batch.think_end,
                rewards=batch.rewards, bucket_width=self.config.bucket_width,
                num_buckets=self.config.num_buckets))
        except Exception as exc:
            self.guard("response metrics", exc)
        try:
            if batch.scores is not None:
                out.update(metrics.length_by_outcome(lengths, batch.scores))
            if batch.rewards is not None and batch.group_ids is not None:
                ratio = metrics.zero_spread_group_ratio(batch.rewards, batch.group_ids)
                if ratio is not None:
                    out["bai/reward/zero_spread_group_ratio"] = ratio
            if self.log_kl and batch.kl is not None:
                kl = batch.kl.to(torch.float64)
                out["bai/kl/mean"] = float(kl.mean())
                out["bai/kl/max"] = float(kl.max())
        except Exception as exc:
            self.guard("outcome/kl metrics", exc)
        out.update(self._detect(step, out))
        return out

    def _detect(self, step: int, stats: dict[str, float]) -> dict[str, float]:
        out: dict[str, float] = {}
        try:
            mean_len = stats.get("bai/response_length/mean")
            if mean_len is not None:
                for msg in self.length.update(step, mean_len):
                    logger.warning("bai: %s", msg)
                if self.length.onset_step == step and self.config.stop_on_collapse:
                    self.stop_requested = True
                if self.length.baseline:
                    out["bai/response_length/ratio_to_init"] = mean_len / self.length.baseline
                out["bai/detector/length_collapse"] = float(self.length.active)
                if self.length.last_ratio is not None:
                    out["bai/detector/length_ratio_smoothed"] = self.length.last_ratio
                out.update({self.length.LOG_PREFIX + k: v
                            for k, v in self.length.logged_state().items()})
        except Exception as exc:
            self.guard("length collapse detector", exc)
        try:
            mean_r = stats.get("bai/reward/mean")
            if mean_r is not None:
                for msg in self.reward.update(step, mean_r):
                    logger.warning("bai: %s", msg)
                if self.reward.baseline is not None:
                    out["bai/reward/delta_from_init"] = mean_r - self.reward.baseline
                out["bai/detector/reward_dip"] = float(self.reward.active)
                out["bai/detector/reward_recovered"] = float(self.reward.recovery_step is not None)
                out.update({self.reward.LOG_PREFIX + k: v
                            for k, v in self.reward.logged_state().items()})
        except Exception as exc:
            self.guard("reward hockey-stick detector", exc)
        return out

    def _write(self, step: int, stats: dict[str, float]) -> None:
        if not self.jsonl_path:
            return
        try:
            append_row(self.jsonl_path, {"step": step, **stats})
        except Exception as exc:
            self.guard("jsonl write", exc)

    @property
    def samples_path(self) -> str | None:
        """bai_samples.jsonl beside the metrics JSONL (None without one)."""
        return os.path.join(os.path.dirname(self.jsonl_path), SAMPLES_NAME) \
            if self.jsonl_path else None

    def write_samples(self, step: int, samples: Sequence[dict[str, Any]]) -> None:
        """Append one row per sample (`config.samples` of them at most), with the step."""
        path = self.samples_path
        if not path or self.config.samples <= 0:
            return
        try:
            for index, sample in enumerate(samples[: self.config.samples]):
                append_row(path, {"step": step, "index": index, **sample})
        except Exception as exc:
            self.guard("samples write", exc)

    def collapse_evidence(self, step: int) -> str:
        """One line naming the step and what the length detector saw there."""
        det = self.length
        parts = [f"Sequence Length Collapse at step {det.onset_step or step}"]
        if det.last_ratio is not None and det.baseline:
            parts.append(f"smoothed mean response length {det.last_ratio * det.baseline:.1f} "
                         f"tokens = {det.last_ratio:.2f} x baseline {det.baseline:.1f}"
                         f" (threshold {1 - self.config.collapse_drop:.2f})")
        return ": ".join(parts)

    def state_dict(self) -> dict[str, Any]:
        return {"version": 1, "step_counter": self.step_counter,
                "length": self.length.state_dict(), "reward": self.reward.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step_counter = int(state.get("step_counter", 0))
        self.length.load_state_dict(state["length"])
        self.reward.load_state_dict(state["reward"])


def think_ends(rows: Sequence[torch.Tensor], masks: Sequence[torch.Tensor],
               think_close_ids: Sequence[int]) -> torch.Tensor | None:
    """`</think>` offsets of several (B, T) id/mask blocks, concatenated; None without ids."""
    if not think_close_ids:
        return None
    return torch.cat([metrics.think_end_positions(r, m.bool(), think_close_ids)
                      for r, m in zip(rows, masks, strict=True)])
