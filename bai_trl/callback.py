"""BaiCallback: BAI metrics, detectors, JSONL, early stop and checkpointed state for TRL 1.16.

How it reaches TRL (read from the installed trl 1.16.0 GRPOTrainer / RLOOTrainer source):

- Raw samples: a reward function. TRL calls every reward function once per generation round
  with `completion_ids` (the token ids of each completion of this process, the EOS included),
  `trainer_state` and `log_metric`, before the optimizer step that trains on them. So
  `BaiCallback.wrap(reward_funcs)` returns the same functions (same names, same outputs) that
  also report the ids and their outputs; the lengths, the clipped flags (no eos/pad id last,
  TRL's `completions/clipped_ratio` rule) and the rewards (TRL's weighted sum) come from there.
- Global batch: the wrapped functions run on every process in lockstep, so the round is
  gathered there (`accelerate.utils.gather_object`, process order = TRL's own reward order)
  and the main process computes the row; the stop decision is broadcast back.
- TRL's logs: `log_metric(name, value)` is TRL's public channel for scalars of reward
  functions; they join `completions/mean_length` & co. in `trainer.log()` at the same global
  step, so every reporter (TensorBoard, wandb, trackio) and `state.log_history` get the
  `bai/` keys. An `on_log` callback cannot add them: transformers puts user callbacks after
  the reporting callbacks, which have written the step by then.
- The callback does what only a callback can: train vs eval (the model's mode), early stop
  (`control.should_training_stop`, plus `should_save` for the model of that step), the
  detector state in each checkpoint folder (`on_save`) and back on resume (`on_train_begin`).
- Not used: TRL's private `_metrics`, `_logs`, `_generate*` (no public contract), and
  `log_completions` parquet files (main process only, written after the step's log, text
  without token ids). TRL computes KL only per token inside the loss: there is no per-
  completion KL to read, so `bai/kl/*` is not logged (TRL's own `kl`/`entropy` stay in its
  logs).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

from transformers import TrainerCallback

from bai_core.config import BaiConfig
from bai_core.constants import STOP_FILE
from bai_core.monitor import (
    BaiMonitor,
    ResponseBatch,
    default_jsonl,
    think_close_ids_from_tokenizer,
)
from bai_trl.rewards import RoundCollector, observe
from bai_trl.samples import (
    Round,
    batch_from_rounds,
    eos_and_pad_ids,
    gather_rounds,
    local_round,
    total_rewards,
)

logger = logging.getLogger("bai")

__all__ = ["BaiCallback", "STATE_FILE", "rounds_per_step"]

STATE_FILE = "bai_state.json"  # detector state, written into each checkpoint-<step>/ folder
CHECKPOINT_PREFIX = "checkpoint"  # transformers.trainer_utils.PREFIX_CHECKPOINT_DIR


def rounds_per_step(args: Any) -> int:
    """Generation rounds per optimizer step: TRL generates every `steps_per_generation x
    num_iterations` micro-batches and steps the optimizer every `gradient_accumulation_steps`
    (1 when a round serves one or more whole steps: its row goes to the first of them)."""
    accum = int(getattr(args, "gradient_accumulation_steps", 1) or 1)
    every = int(getattr(args, "steps_per_generation", None) or accum)
    every *= int(getattr(args, "num_iterations", 1) or 1)
    if every >= accum:
        return 1
    if accum % every:
        logger.warning("bai: gradient_accumulation_steps %d is not a multiple of steps_per_"
                       "generation x num_iterations %d: one bai row per generation round",
                       accum, every)
        return 1
    return accum // every


class BaiCallback(TrainerCallback):
    """The `bai/` metrics and both detectors for TRL's GRPOTrainer / RLOOTrainer.

    `BaiCallback(config, **fields)`: a BaiConfig (default: `BaiConfig.from_env()`, the BAI_*
    variables `bai-train` uses) with `fields` replaced, validated here (ValueError naming the
    option). Use it twice: `reward_funcs=bai.wrap(reward_funcs)` and `callbacks=[bai]`.
    `resume_from`: the checkpoint folder to read the detector state from on a resume, when it
    is neither `args.resume_from_checkpoint` nor `<output_dir>/checkpoint-<step>`.
    """

    def __init__(self, config: BaiConfig | None = None, *, resume_from: str | None = None,
                 **fields: Any) -> None:
        config = config if config is not None else BaiConfig.from_env()
        self.config = dataclasses.replace(config, **fields) if fields else config
        self.monitor = BaiMonitor(self.config, jsonl_path=None, log_kl=False)  # validates
        self.resume_from = resume_from
        self.stop_record: dict[str, Any] | None = None  # set when the run was stopped early
        self._collector = RoundCollector(self._on_round, lambda k, e: self.monitor.guard(k, e))
        self._n_funcs = 0
        self._rewards_visible = True
        self._score_index: int | None = None
        self._model: Any = None
        self._end_ids: set[int] = set()
        self._think_ids: list[int] = []
        self._weights: list[float] | None = None
        self._num_generations = 1
        self._rounds_per_step = 1
        self._world = 1
        self._main = True
        self._pending: list[Round | None] = []
        self._rounds_seen = 0
        self._stop: tuple[int, str] | None = None  # (step, evidence) broadcast by the main process
        self._stop_step: int | None = None
        self._logged_rows = 0
        self._warned: set[str] = set()

    # ---- the reward side -------------------------------------------------------------------
    def wrap(self, reward_funcs: Any, score: Callable[..., Any] | None = None) -> Any:
        """`reward_funcs` (one function or TRL's list) with each function wrapped to report
        its round to this callback; same names and outputs. `score`: the function (one of
        them) whose outputs are correctness scores (>= 0.5 correct) for
        `bai/response_length/{correct,incorrect}_mean`. Reward models (nn.Module or hub id)
        are passed through; with one in the list the reward metrics are left out."""
        single = not isinstance(reward_funcs, list | tuple)
        funcs = [reward_funcs] if single else list(reward_funcs)
        if self.config.disable:
            return reward_funcs
        wrapped, seen = [], set()
        for index, func in enumerate(funcs):
            obs = observe(func, index, self._collector)
            wrapped.append(func if obs is None else obs)
            if obs is not None:
                seen.add(index)
            if score is not None and func is score:
                self._score_index = index
        self._n_funcs = len(funcs)
        self._rewards_visible = len(seen) == len(funcs)
        self._collector.expected = seen
        if not self._rewards_visible:
            logger.info("bai: a reward model is among the reward functions: TRL alone sees its "
                        "scores, so the bai/reward* metrics and the reward dip detector are off")
        if score is not None and self._score_index is None:
            logger.warning("bai: `score` is not one of the reward functions; no correct/"
                           "incorrect lengths")
        return wrapped[0] if single else wrapped

    def _on_round(self, completion_ids: Sequence[Sequence[int]], outputs: dict[int, list],
                  kwargs: dict[str, Any]) -> None:
        model = self._model
        if self.config.disable or model is None or not getattr(model, "training", False):
            return  # evaluation rounds (or a trainer this callback is not attached to)
        self._rounds_seen += 1
        started = time.perf_counter()
        state = kwargs.get("trainer_state")
        step = int(state.global_step) + 1 if state is not None else None
        try:
            self._pending.append(self._local(completion_ids, outputs))
        except Exception as exc:
            self.monitor.guard("sample capture", exc)
            self._pending.append(None)
        if len(self._pending) < self._rounds_per_step:
            return
        rounds, self._pending = self._pending, []
        stop = None
        try:
            rounds = gather_rounds(rounds, self._world)  # a collective: every process is here
            if self._main:
                stop = self._compute(rounds, step, kwargs.get("log_metric"), started)
        except Exception as exc:
            self.monitor.guard("bai metrics", exc)
        self._stop = self._broadcast(stop) or self._stop

    def _local(self, completion_ids: Sequence[Sequence[int]], outputs: dict[int, list]) -> Round:
        rewards = None
        if self._rewards_visible and len(outputs) == self._n_funcs:
            weights = self._weights or [1.0] * self._n_funcs
            rewards = total_rewards([outputs[i] for i in range(self._n_funcs)], weights)
        scores = None
        if self._score_index is not None and self._score_index in outputs:
            scores = total_rewards([outputs[self._score_index]], [1.0])
        return local_round(completion_ids, self._end_ids, self._think_ids, rewards, scores)

    def _compute(self, rounds: list[Round | None], step: int | None,
                 log_metric: Callable[[str, float], None] | None,
                 started: float) -> tuple[int, str] | None:
        """Main process: the step's row (JSONL written by the monitor), into TRL's logs;
        `bai/perf/hook_ms` counts the capture and the gather of the last round too."""
        if any(r is None for r in rounds):
            return None  # a process failed to read its samples (logged there)
        batch = batch_from_rounds(rounds, self._num_generations)
        if batch is None:
            return None
        _drop_non_finite(batch, self.monitor.guard, step)
        row = self.monitor.compute(batch, step, started=started)
        if log_metric is None:
            self._warn_once("no log_metric", "bai: TRL passed no log_metric to the reward "
                            "functions: the bai/ keys go to the JSONL only")
        else:
            for key, value in row.items():
                if isinstance(value, int | float) and math.isfinite(value):
                    log_metric(key, float(value))
            self._logged_rows += 1
        if self.monitor.stop_requested:
            self.monitor.stop_requested = False
            at = self.monitor.step_counter
            return at, self.monitor.collapse_evidence(at)
        return None

    def _broadcast(self, stop: tuple[int, str] | None) -> tuple[int, str] | None:
        if self._world <= 1:
            return stop
        try:
            from accelerate.utils import broadcast_object_list

            box = [stop]
            broadcast_object_list(box, from_process=0)
            return box[0]
        except Exception as exc:
            self.monitor.guard("stop broadcast", exc)
            return None

    # ---- the trainer side ------------------------------------------------------------------
    def on_train_begin(self, args, state, control, model=None, processing_class=None,
                       **kwargs):
        if self.config.disable:
            return
        try:
            self._model = model
            tokenizer = getattr(processing_class, "tokenizer", processing_class)
            self._end_ids = eos_and_pad_ids(model, tokenizer)
            token = self.config.think_close_token
            self._think_ids = think_close_ids_from_tokenizer(tokenizer, token) if token else []
            if token and not self._think_ids:
                logger.info("bai: %r is not one token of this tokenizer: think metrics are off",
                            token)
            self._num_generations = int(getattr(args, "num_generations", 1) or 1)
            weights = getattr(args, "reward_weights", None)
            self._weights = [float(w) for w in weights] if weights else None
            if self._weights is not None and len(self._weights) != self._n_funcs:
                self._rewards_visible = False
            self._rounds_per_step = rounds_per_step(args)
            self._world = int(getattr(args, "world_size", 1) or 1)
            self._main = bool(state.is_world_process_zero)
            self._pending, self._stop, self._stop_step, self.stop_record = [], None, None, None
            if state.global_step == 0 and self.monitor.step_counter:  # a new run, same callback
                self.monitor = BaiMonitor(self.config, jsonl_path=None, log_kl=False)
            if self._main:
                jsonl = self.config.jsonl
                self.monitor.jsonl_path = (os.path.abspath(jsonl) if jsonl
                                           else default_jsonl(args.output_dir))
                logger.info("bai: metrics -> %s", self.monitor.jsonl_path)
                if getattr(args, "logging_steps", 1) != 1:
                    logger.info("bai: logging_steps=%s: TRL averages the bai/ keys over the "
                                "logged steps; %s has every step", args.logging_steps,
                                self.monitor.jsonl_path)
            if state.global_step > 0:
                self._restore(args, state)
        except Exception as exc:
            self.monitor.guard("set-up", exc)

    def on_step_end(self, args, state, control, **kwargs):
        if self.config.disable:
            return
        if not self._rounds_seen and state.global_step >= 1:
            self._warn_once("no samples", "bai: no completions reached BaiCallback; pass "
                            "reward_funcs=bai.wrap(reward_funcs) to the trainer")
        if self._stop is not None and self._stop_step is None:
            self._stop_step = state.global_step
            control.should_training_stop = True
            control.should_save = True  # the model of this step, in checkpoint-<step>/
            control.should_log = True

    def on_log(self, args, state, control, logs=None, **kwargs):
        # a step log with TRL's own completion metrics must carry ours too
        if (self._logged_rows and logs and "completions/mean_length" in logs
                and not any(k.startswith("bai/") for k in logs)):
            self._warn_once("keys lost", "bai: the bai/ keys did not reach TRL's logs")

    def on_save(self, args, state, control, **kwargs):
        if self.config.disable:
            return
        folder = os.path.join(args.output_dir, f"{CHECKPOINT_PREFIX}-{state.global_step}")
        if self._main:
            try:
                with open(os.path.join(folder, STATE_FILE), "w", encoding="utf-8") as fh:
                    json.dump({"version": 1, "step": state.global_step,
                               "monitor": self.monitor.state_dict()}, fh)
            except Exception as exc:
                self.monitor.guard("detector state save", exc)
        if self._stop_step == state.global_step and self.stop_record is None:
            self._early_stop(folder)

    def on_train_end(self, args, state, control, **kwargs):
        if self._stop_step is not None and self.stop_record is None:
            self._early_stop(None)  # stopped, but no checkpoint was written

    def _early_stop(self, folder: str | None) -> None:
        step, evidence = self._stop or (self._stop_step, "")
        saved = os.path.abspath(folder) if folder and os.path.isdir(folder) else None
        self.stop_record = {"step": step, "evidence": evidence, "actor_dir": saved,
                            "reason": "length_collapse"}
        if not self._main:
            return
        logger.error("bai: %s; stopping the run (stop_on_collapse)%s", evidence,
                     f"; model of this step saved to {saved}" if saved else "")
        try:
            path = os.path.join(os.path.dirname(self.monitor.jsonl_path or ""), STOP_FILE)
            with open(path, "w", encoding="utf-8") as fh:
                json.dump(self.stop_record, fh)
        except Exception as exc:
            self.monitor.guard("early-stop record", exc)

    def _restore(self, args: Any, state: Any) -> None:
        folders = [self.resume_from, getattr(args, "resume_from_checkpoint", None),
                   os.path.join(args.output_dir, f"{CHECKPOINT_PREFIX}-{state.global_step}")]
        for folder in folders:
            path = os.path.join(folder, STATE_FILE) if isinstance(folder, str) else None
            if path and os.path.isfile(path):
                with open(path, encoding="utf-8") as fh:
                    saved = json.load(fh)
                self.monitor.load_state_dict(saved["monitor"])
                logger.info("bai: detector state of step %s restored from %s",
                            saved.get("step"), path)
                return
        logger.warning("bai: resumed at step %d, but no %s was found in %s: the detectors "
                       "start a new baseline (pass BaiCallback(resume_from=CHECKPOINT))",
                       state.global_step, STATE_FILE, [f for f in folders if f])

    def _warn_once(self, kind: str, message: str) -> None:
        if kind not in self._warned:
            self._warned.add(kind)
            logger.warning(message)


def _drop_non_finite(batch: ResponseBatch, guard: Callable[[str, BaseException], None],
                     step: int | None) -> None:
    """Rewards or scores with NaN/inf (a reward returned NaN, or None from every function):
    their metrics are skipped for the step, reported once."""
    for name in ("rewards", "scores"):
        values = getattr(batch, name)
        if values is None:
            continue
        bad = int((~values.isfinite()).sum())
        if bad:
            setattr(batch, name, None)
            guard(name, ValueError(f"{bad} of {values.numel()} {name} at step {step} are not "
                                   f"finite (NaN/inf): the {name} metrics of such steps are "
                                   "skipped"))
