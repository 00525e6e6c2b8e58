"""Per-run BAI monitor: turns OpenRLHF Experience objects into `bai/` metrics and detector state."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

import torch

from . import metrics
from .config import BaiConfig
from .detectors import LengthCollapseDetector, RewardHockeyStickDetector
from .jsonl import append_row

logger = logging.getLogger("bai")

__all__ = ["BaiMonitor", "think_close_ids_from_tokenizer", "batch_from_experiences",
           "kl_is_computed"]

JSONL_NAME = "bai_metrics.jsonl"


def think_close_ids_from_tokenizer(tokenizer: Any, token: str = "</think>") -> list[int]:
    """Ids of `token` when it is a single vocabulary entry of `tokenizer`; [] otherwise."""
    if tokenizer is None:
        return []
    try:
        vocab = tokenizer.get_vocab()
    except Exception:
        vocab = {}
    tid = vocab.get(token)
    if tid is None:
        return []
    unk = getattr(tokenizer, "unk_token_id", None)
    return [] if unk is not None and tid == unk else [int(tid)]


def kl_is_computed(args: Any) -> bool:
    """Whether OpenRLHF 0.11.2 puts a real KL in `Experience.info["kl"]` for these args.

    Its experience maker computes the KL to the reference model only when a reference model
    exists (`--algo.kl.init_coef` > 0) and the KL is not used as a loss
    (`--algo.kl.use_loss` off); otherwise `info["kl"]` is zeros. Read defensively: missing
    args or fields (e.g. a test trainer) count as computed.
    """
    kl = getattr(getattr(args, "algo", None), "kl", None)
    if kl is None:
        return True
    if getattr(kl, "use_loss", False) is True:
        return False
    coef = getattr(kl, "init_coef", None)
    if isinstance(coef, int | float) and not isinstance(coef, bool):
        return coef > 0
    return True


def _cat(parts: list[torch.Tensor]) -> torch.Tensor | None:
    return torch.cat([p.reshape(-1).cpu() for p in parts]) if parts else None


def batch_from_experiences(
    experiences: Sequence[Any], think_close_ids: Sequence[int]
) -> dict[str, torch.Tensor | None]:
    """Concatenate per-response tensors of a list of Experience (same order as OpenRLHF's
    own stats): lengths, truncated, rewards, scores, kl and `</think>` offsets."""
    lengths, truncated, rewards, scores, kl, think = [], [], [], [], [], []
    index: list[int] | None = []
    think_ok = bool(think_close_ids)
    for exp in experiences:
        if exp.response_length is None:
            continue
        lengths.append(exp.response_length)
        idx = getattr(exp, "index", None)
        if index is not None and idx is not None and len(idx) == exp.response_length.numel():
            index.extend(int(i) for i in idx)
        else:
            index = None
        if exp.truncated is not None:
            truncated.append(exp.truncated)
        info = exp.info or {}
        if "reward" in info:
            rewards.append(info["reward"])
        if "score" in info:
            scores.append(info["score"])
        if "kl" in info:
            kl.append(info["kl"])
        if think_ok:
            mask = exp.action_mask
            if exp.sequences is None or mask is None:
                think_ok = False
                continue
            ids = exp.sequences[:, -mask.size(1):]  # action_mask covers the last A tokens
            think.append(metrics.think_end_positions(ids, mask.bool(), think_close_ids))
    out = {
        "lengths": _cat(lengths),
        "truncated": _cat(truncated),
        "rewards": _cat(rewards),
        "scores": _cat(scores),
        "kl": _cat(kl),
        "think_end": _cat(think) if think_ok else None,
        "index": torch.tensor(index, dtype=torch.long) if index else None,
    }
    n = out["lengths"].numel() if out["lengths"] is not None else 0
    for key in ("truncated", "rewards", "scores", "kl", "think_end", "index"):
        if out[key] is not None and out[key].numel() != n:
            out[key] = None  # not one value per response: skip rather than misalign
    return out


def _prefixed(prefix: str, values: dict[str, float]) -> dict[str, float]:
    return {prefix + key: value for key, value in values.items()}


class BaiMonitor:
    """Detectors, JSONL output and error-once bookkeeping for one trainer."""

    def __init__(self, config: BaiConfig, jsonl_path: str | None = None,
                 think_close_ids: Sequence[int] = (), samples_per_prompt: int = 1,
                 log_kl: bool = True) -> None:
        """`log_kl=False` leaves `bai/kl/*` out (pass `kl_is_computed(trainer.args)`: with no
        reference model, or KL as a loss, OpenRLHF's `info["kl"]` is zeros, not a KL).
        Raises ValueError (naming the `--bai.*` option) for an invalid config."""
        config.validate()
        self.config = config
        self.samples_per_prompt = samples_per_prompt
        self.jsonl_path = jsonl_path
        self.think_close_ids = list(think_close_ids)
        self.log_kl = log_kl
        self.length = LengthCollapseDetector(**config.length_detector_kwargs())
        self.reward = RewardHockeyStickDetector(**config.reward_detector_kwargs())
        self.step_counter = 0
        self.stop_requested = False
        self._failed: set[str] = set()

    @staticmethod
    def default_jsonl(args: Any) -> str:
        """BAI_JSONL if set, else <args.ckpt.output_dir>/bai_metrics.jsonl (absolute)."""
        out_dir = getattr(getattr(args, "ckpt", None), "output_dir", None) or "."
        return os.path.abspath(os.path.join(out_dir, JSONL_NAME))

    def guard(self, kind: str, exc: BaseException) -> None:
        """Log a metric/detector failure once per kind; never re-raise."""
        if kind not in self._failed:
            self._failed.add(kind)
            logger.warning("bai: %s failed and is skipped (logged once): %r", kind, exc,
                           exc_info=exc)

    def compute(self, experiences: Sequence[Any], step: int | None) -> dict[str, float]:
        """All `bai/` keys for one rollout batch; each part fails independently."""
        self.step_counter = step if step is not None else self.step_counter + 1
        step = self.step_counter
        out: dict[str, float] = {}
        try:
            batch = batch_from_experiences(experiences, self.think_close_ids)
        except Exception as exc:
            self.guard("experience extraction", exc)
            return out
        lengths = batch["lengths"]
        if lengths is None or lengths.numel() == 0:
            return out
        try:
            out.update(metrics.compute_response_metrics(
                lengths,
                truncated=batch["truncated"],
                think_end=batch["think_end"],
                rewards=batch["rewards"],
                bucket_width=self.config.bucket_width,
                num_buckets=self.config.num_buckets,
            ))
        except Exception as exc:
            self.guard("response metrics", exc)
        try:
            if batch["scores"] is not None:
                out.update(metrics.length_by_outcome(lengths, batch["scores"]))
            if (self.samples_per_prompt > 1 and batch["rewards"] is not None
                    and batch["index"] is not None):
                ratio = metrics.zero_spread_group_ratio(
                    batch["rewards"], batch["index"] // self.samples_per_prompt)
                if ratio is not None:
                    out["bai/reward/zero_spread_group_ratio"] = ratio
            if self.log_kl and batch["kl"] is not None:
                kl = batch["kl"].to(torch.float64)
                out["bai/kl/mean"] = float(kl.mean())
                out["bai/kl/max"] = float(kl.max())
        except Exception as exc:
            self.guard("outcome/kl metrics", exc)
        out.update(self._detect(step, out))
        self._write(step, out)
        return out

    def _detect(self, step: int, stats: dict[str, float]) -> dict[str, float]:
        out: dict[str, float] = {}
        try:
            mean_len = stats.get("bai/response_length/mean")
            if mean_len is not None:
                msgs = self.length.update(step, mean_len)
                for msg in msgs:
                    logger.warning("bai: %s", msg)
                if self.length.onset_step == step and self.config.stop_on_collapse:
                    self.stop_requested = True
                if self.length.baseline:
                    out["bai/response_length/ratio_to_init"] = mean_len / self.length.baseline
                out["bai/detector/length_collapse"] = float(self.length.active)
                if self.length.last_ratio is not None:
                    out["bai/detector/length_ratio_smoothed"] = self.length.last_ratio
                out.update(_prefixed(self.length.LOG_PREFIX, self.length.logged_state()))
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
                out.update(_prefixed(self.reward.LOG_PREFIX, self.reward.logged_state()))
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

    def state_dict(self) -> dict[str, Any]:
        return {
            "version": 1,
            "step_counter": self.step_counter,
            "length": self.length.state_dict(),
            "reward": self.reward.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step_counter = int(state.get("step_counter", 0))
        self.length.load_state_dict(state["length"])
        self.reward.load_state_dict(state["reward"])
