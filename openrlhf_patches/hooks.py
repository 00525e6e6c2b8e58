"""Thin, version-guarded wrappers around OpenRLHF 0.11.2's PPO trainer methods (no copied code).

`install()` is the Ray `worker_process_setup_hook`: it reads BAI_* env vars and patches
`BasePPOTrainer` as soon as `openrlhf.trainer.ppo_trainer` is imported in that process.
"""

from __future__ import annotations

import functools
import importlib.abc
import importlib.metadata
import logging
import sys
from typing import Any

from . import SUPPORTED_OPENRLHF
from .config import BaiConfig
from .monitor import BaiMonitor, think_close_ids_from_tokenizer

logger = logging.getLogger("bai")

__all__ = ["install", "patch_trainer_class", "BaiEarlyStop", "TARGET_MODULE", "STATE_KEY"]

TARGET_MODULE = "openrlhf.trainer.ppo_trainer"
STATE_KEY = "bai_monitor"
_PATCHED_FLAG = "_bai_patched"
_warned_version = False


class BaiEarlyStop(RuntimeError):
    """Raised (only with --bai.stop_on_collapse) after the step's logs/checkpoint are saved."""


def openrlhf_version() -> str | None:
    try:
        return importlib.metadata.version("openrlhf")
    except importlib.metadata.PackageNotFoundError:
        return None


def version_ok(version: str | None = None) -> bool:
    """True for the supported OpenRLHF version; otherwise warn once and return False."""
    global _warned_version
    version = openrlhf_version() if version is None else version
    if version == SUPPORTED_OPENRLHF:
        return True
    if not _warned_version:
        _warned_version = True
        logger.warning(
            "bai: OpenRLHF %s is installed but the BAI hooks target %s exactly; metrics and "
            "detectors are DISABLED, training continues unchanged.", version, SUPPORTED_OPENRLHF,
        )
    return False


def _monitor(trainer: Any) -> BaiMonitor:
    mon = trainer.__dict__.get("_bai_monitor")
    if mon is None:
        config = BaiConfig.from_env()
        jsonl = config.jsonl or BaiMonitor.default_jsonl(getattr(trainer, "args", None))
        ids = think_close_ids_from_tokenizer(getattr(trainer, "tokenizer", None),
                                             config.think_close_token)
        if not ids:
            logger.info("bai: %r is not one token of this tokenizer: think metrics are off",
                        config.think_close_token)
        args = getattr(trainer, "args", None)
        n = getattr(getattr(args, "rollout", None), "n_samples_per_prompt", 1)
        mon = BaiMonitor(config, jsonl_path=jsonl, think_close_ids=ids,
                         samples_per_prompt=n if isinstance(n, int) else 1)
        trainer.__dict__["_bai_monitor"] = mon
        logger.info("bai: metrics -> %s", jsonl)
    return mon


def _wrap_compute_rollout_stats(original):
    @functools.wraps(original)
    def _compute_rollout_stats(self, experiences):
        stats = original(self, experiences)
        try:
            mon = _monitor(self)
            stats.update(mon.compute(experiences, self.__dict__.get("_bai_step")))
        except Exception as exc:  # never break a training step
            _guard(self, "bai metrics", exc)
        return stats

    return _compute_rollout_stats


def _wrap_train_step(original):
    @functools.wraps(original)
    def train_step(self, rollout_samples, global_step, *args, **kwargs):
        self.__dict__["_bai_step"] = global_step + 1  # the step fit() logs this batch under
        return original(self, rollout_samples, global_step, *args, **kwargs)

    return train_step


def _wrap_save_logs(original):
    @functools.wraps(original)
    def save_logs_and_checkpoints(self, global_step, logs_dict=None, client_states=None):
        mon = self.__dict__.get("_bai_monitor")
        if mon is not None and isinstance(client_states, dict):
            try:
                client_states[STATE_KEY] = mon.state_dict()
            except Exception as exc:
                _guard(self, "detector state save", exc)
        result = original(self, global_step, logs_dict, client_states)
        if mon is not None and mon.stop_requested:
            mon.stop_requested = False
            logger.error("bai: stopping the run at step %s (--bai.stop_on_collapse)", global_step)
            raise BaiEarlyStop(f"Sequence Length Collapse detected at step {global_step}")
        return result

    return save_logs_and_checkpoints


def _wrap_restore(original):
    @functools.wraps(original)
    def restore_best_checkpoint_state(self, checkpoint_states):
        result = original(self, checkpoint_states)
        try:
            state = (checkpoint_states or {}).get(STATE_KEY)
            if state:
                _monitor(self).load_state_dict(state)
                logger.info("bai: detector state restored from checkpoint")
        except Exception as exc:
            _guard(self, "detector state restore", exc)
        return result

    return restore_best_checkpoint_state


_fallback_failed: set[str] = set()


def _guard(trainer: Any, kind: str, exc: BaseException) -> None:
    try:
        _monitor(trainer).guard(kind, exc)
    except Exception:  # no monitor (e.g. bad BAI_* value): log once per kind here
        if kind not in _fallback_failed:
            _fallback_failed.add(kind)
            logger.warning("bai: %s failed and is skipped (logged once): %r", kind, exc)


_WRAPPERS = {
    "_compute_rollout_stats": _wrap_compute_rollout_stats,
    "train_step": _wrap_train_step,
    "save_logs_and_checkpoints": _wrap_save_logs,
    "restore_best_checkpoint_state": _wrap_restore,
}


def patch_trainer_class(cls: type) -> bool:
    """Wrap the four BasePPOTrainer methods in place; idempotent. False if any is missing."""
    if cls.__dict__.get(_PATCHED_FLAG):
        return True
    missing = [name for name in _WRAPPERS if not callable(cls.__dict__.get(name))]
    if missing:
        logger.warning("bai: %s lacks %s; hooks not installed", cls.__name__, missing)
        return False
    for name, wrap in _WRAPPERS.items():
        setattr(cls, name, wrap(cls.__dict__[name]))
    setattr(cls, _PATCHED_FLAG, True)
    return True


def _patch_module(module: Any) -> bool:
    try:
        return patch_trainer_class(module.BasePPOTrainer)
    except Exception as exc:
        logger.warning("bai: could not patch %s: %r", TARGET_MODULE, exc)
        return False


class _PostImportPatcher(importlib.abc.MetaPathFinder):
    """Patches TARGET_MODULE right after it executes, so workers that never import it pay
    nothing."""

    def find_spec(self, fullname, path, target=None):
        if fullname != TARGET_MODULE:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None and spec.loader is not None:
                exec_module = spec.loader.exec_module

                def _exec_and_patch(module, _exec=exec_module):
                    _exec(module)
                    _patch_module(module)

                spec.loader.exec_module = _exec_and_patch
                return spec
        return None


def _ensure_log_handler() -> None:
    """Ray workers have no logging config: give the "bai" logger its own stderr handler."""
    if not logger.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("[bai] %(levelname)s %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False


def install() -> bool:
    """Ray worker setup hook (also safe to call in any process). True if patched or armed.

    Never raises: an exception in a Ray setup hook would kill the worker, and training must
    not depend on the BAI metrics.
    """
    try:
        _ensure_log_handler()
        if BaiConfig.from_env().disable:
            return False
        if not version_ok():
            return False
        module = sys.modules.get(TARGET_MODULE)
        if module is not None:
            return _patch_module(module)
        if not any(isinstance(f, _PostImportPatcher) for f in sys.meta_path):
            sys.meta_path.insert(0, _PostImportPatcher())
        return True
    except Exception as exc:
        logger.warning("bai: hooks not installed: %r", exc)
        return False
