"""Thin wrappers around OpenRLHF 0.11.2's PPO trainer methods (no copied code).

`patch_module` runs (armed by `activate.arm`) right after `openrlhf.trainer.ppo_trainer` or
`ppo_trainer_async` loads in a process: it wraps four `BasePPOTrainer` methods, re-points the
Ray actor classes built on it, and pins those actors to the node that creates them (the head,
for the driver), so the JSONL, `bai_stop.json` and TensorBoard land where the run was launched.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import time
from typing import Any

from bai_core.config import BaiConfig
from bai_core.constants import STOP_FILE
from bai_core.monitor import BaiMonitor, default_jsonl, think_close_ids_from_tokenizer

from .activate import node_id
from .experiences import batch_from_experiences, kl_is_computed, sample_texts

logger = logging.getLogger("bai")

__all__ = ["patch_module", "patch_trainer_class", "patch_ray_actor_class", "BaiEarlyStop",
           "STATE_KEY", "STOP_FILE"]

STATE_KEY = "bai_monitor"
_PATCHED_FLAG = "_bai_patched"


class BaiEarlyStop(RuntimeError):
    """Raised (only with --bai.stop_on_collapse) after the step's logs/checkpoint are saved."""


def _monitor(trainer: Any) -> BaiMonitor:
    mon = trainer.__dict__.get("_bai_monitor")
    if mon is None:
        config = BaiConfig.from_env()
        args = getattr(trainer, "args", None)
        jsonl = config.jsonl or default_jsonl(getattr(getattr(args, "ckpt", None),
                                                       "output_dir", None))
        ids = think_close_ids_from_tokenizer(getattr(trainer, "tokenizer", None),
                                             config.think_close_token)
        if not ids:
            logger.info("bai: %r is not one token of this tokenizer: think metrics are off",
                        config.think_close_token)
        n = getattr(getattr(args, "rollout", None), "n_samples_per_prompt", 1)
        mon = BaiMonitor(config, jsonl_path=jsonl, log_kl=kl_is_computed(args))
        trainer.__dict__["_bai_monitor"] = mon
        trainer.__dict__["_bai_batch_args"] = (ids, n if isinstance(n, int) else 1)
        logger.info("bai: metrics -> %s (written on Ray node %s)", jsonl, node_id())
    return mon


def _compute_rollout_stats(original, self, experiences):
    stats = original(self, experiences)
    try:
        started = time.perf_counter()
        mon = _monitor(self)
        batch = batch_from_experiences(experiences, *self.__dict__["_bai_batch_args"])
        stats.update(mon.compute(batch, self.__dict__.get("_bai_step"), started))
    except Exception as exc:  # never break a training step
        _guard(self, "bai metrics", exc)
        return stats
    if mon.config.samples > 0:
        try:
            mon.write_samples(mon.step_counter, sample_texts(
                experiences, self.tokenizer, mon.config.samples))
        except Exception as exc:
            _guard(self, "bai samples", exc)
    return stats


def _train_step(original, self, rollout_samples, global_step, *args, **kwargs):
    self.__dict__["_bai_step"] = global_step + 1  # the step fit() logs this batch under
    return original(self, rollout_samples, global_step, *args, **kwargs)


def _save_logs_and_checkpoints(original, self, global_step, logs_dict=None, client_states=None):
    mon = self.__dict__.get("_bai_monitor")
    if mon is not None and isinstance(client_states, dict):
        try:
            client_states[STATE_KEY] = mon.state_dict()
        except Exception as exc:
            _guard(self, "detector state save", exc)
    result = original(self, global_step, logs_dict, client_states)
    if mon is not None and mon.stop_requested:
        mon.stop_requested = False
        raise BaiEarlyStop(_early_stop(self, mon, global_step))
    return result


def _early_stop(trainer: Any, mon: BaiMonitor, step: int) -> str:
    """Save the actor of this step (HF format; the critic too with --critic.save_value_network,
    as OpenRLHF does at the end of a run), flush the loggers, record why; the message."""
    evidence = mon.collapse_evidence(step)
    logger.error("bai: %s; stopping the run (--bai.stop_on_collapse)", evidence)
    args = getattr(trainer, "args", None)
    out_dir = getattr(getattr(args, "ckpt", None), "output_dir", None)
    critic = getattr(getattr(args, "critic", None), "save_value_network", False) is True
    saved = _save(trainer, "actor", out_dir)
    critic_dir = _save(trainer, "critic", out_dir and out_dir + "_critic") if critic else None
    for name in ("tensorboard_logger", "wandb_logger"):
        log = getattr(trainer, name, None)
        if log is not None:
            try:
                log.close()
            except Exception as exc:
                _guard(trainer, f"{name} close on early stop", exc)
    record = {"step": step, "evidence": evidence, "actor_dir": saved,
              "critic_dir": critic_dir, "reason": "length_collapse"}
    try:
        path = os.path.join(os.path.dirname(mon.jsonl_path or ""), STOP_FILE)
        with open(path, "w", encoding="utf-8") as fh:
            json.dump(record, fh)
    except Exception as exc:
        _guard(trainer, "early-stop record", exc)
    return evidence + (f"; actor saved to {saved}" if saved else "")


def _save(trainer: Any, role: str, out_dir: str | None) -> str | None:
    """OpenRLHF's own `save_model` of the actor or critic group; the folder, None on failure."""
    group = getattr(trainer, f"{role}_model_group", None)
    if group is None:
        return None
    try:
        import ray

        ray.get(group.async_run_method(method_name="save_model"))
        return os.path.abspath(out_dir) if out_dir else None
    except Exception as exc:
        _guard(trainer, f"{role} save on early stop", exc)
        return None


def _restore_best_checkpoint_state(original, self, checkpoint_states):
    result = original(self, checkpoint_states)
    try:
        state = (checkpoint_states or {}).get(STATE_KEY)
        if state:
            _monitor(self).load_state_dict(state)
            logger.info("bai: detector state restored from checkpoint")
    except Exception as exc:
        _guard(self, "detector state restore", exc)
    return result


_fallback_failed: set[str] = set()


def _guard(trainer: Any, kind: str, exc: BaseException) -> None:
    try:
        _monitor(trainer).guard(kind, exc)
    except Exception:  # no monitor (e.g. bad BAI_* value): log once per kind here
        if kind not in _fallback_failed:
            _fallback_failed.add(kind)
            logger.warning("bai: %s failed and is skipped (logged once): %r", kind, exc)


_WRAPPERS = {
    "_compute_rollout_stats": _compute_rollout_stats,
    "train_step": _train_step,
    "save_logs_and_checkpoints": _save_logs_and_checkpoints,
    "restore_best_checkpoint_state": _restore_best_checkpoint_state,
}


def _method(original: Any, hook: Any) -> Any:
    """`hook(original, self, ...)` in the place of the method `original` (its name, signature)."""

    @functools.wraps(original)
    def method(*args: Any, **kwargs: Any) -> Any:
        return hook(original, *args, **kwargs)

    return method


def patch_trainer_class(cls: type) -> bool:
    """Wrap the four BasePPOTrainer methods in place; idempotent. False if any is missing."""
    if cls.__dict__.get(_PATCHED_FLAG):
        return True
    missing = [name for name in _WRAPPERS if not callable(cls.__dict__.get(name))]
    if missing:
        logger.warning("bai: %s lacks %s; hooks not installed", cls.__name__, missing)
        return False
    for name, hook in _WRAPPERS.items():
        setattr(cls, name, _method(cls.__dict__[name], hook))
    setattr(cls, _PATCHED_FLAG, True)
    return True


def _ray_actor_classes(module: Any, base: type) -> list[Any]:
    """Ray ActorClass objects in `module` whose class derives from `base` (e.g. PPOTrainer)."""
    found = []
    for value in list(vars(module).values()):
        try:
            cls = value.__ray_metadata__.modified_class
        except Exception:
            continue
        if isinstance(cls, type) and issubclass(cls, base):
            found.append(value)
    return found


def patch_ray_actor_class(actor_class: Any, base: type) -> list[str]:
    """Point Ray's actor class at the patched `base` methods; the names it re-pointed.

    `@ray.remote` already copied every inherited method into `__ray_metadata__.modified_class`
    (shipped by value to the workers) as a tracing wrapper of the unpatched function: drop those,
    so the lookup falls through to `base`, and put Ray's tracing wrapper back around ours."""
    cls = actor_class.__ray_metadata__.modified_class
    fixed = [name for name in _WRAPPERS
             if getattr(cls.__dict__.get(name), "__ray_tracing_wrapped__", False)
             and getattr(cls.__dict__[name], "__wrapped__", None) is not getattr(base, name)]
    for name in fixed:
        delattr(cls, name)  # now resolves to base's patched method
    if fixed:
        try:
            from ray.util.tracing.tracing_helper import _inject_tracing_into_class

            _inject_tracing_into_class(cls)  # re-wrap exactly as Ray does (tracing kept)
        except Exception as exc:  # tracing is optional; the patched methods are reached anyway
            logger.info("bai: Ray tracing wrappers not restored: %r", exc)
    return fixed


def pin_to_creating_node(actor_class: Any) -> None:
    """`actor_class.remote(...)` schedules the actor on the caller's node (the head, for
    OpenRLHF's trainer), so its files land there; idempotent. It asks for 0 CPUs, not the 1 a
    plain actor needs to be scheduled (it holds 0 while it runs), so that a head without CPUs
    (`ray start --head --num-cpus=0`) takes it: a hard pin there would wait forever otherwise."""
    if getattr(actor_class, "_bai_pinned", False):
        return
    original = actor_class.remote

    @functools.wraps(original)
    def remote(*args: Any, **kwargs: Any) -> Any:
        try:
            import ray
            from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

            strategy = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(),
                                                      soft=False)
        except Exception as exc:  # pinning is a convenience; never block the launch
            logger.info("bai: trainer actor not pinned to this node: %r", exc)
            return original(*args, **kwargs)
        options: dict[str, Any] = {"scheduling_strategy": strategy}
        if "num_cpus" not in (getattr(actor_class, "_default_options", None) or {}):
            options["num_cpus"] = 0
        return actor_class.options(**options).remote(*args, **kwargs)

    actor_class.remote = remote
    actor_class._bai_pinned = True


def patch_module(module: Any) -> bool:
    """Patch a trainer module's BasePPOTrainer and its Ray actor classes; False on failure."""
    try:
        base = module.BasePPOTrainer
        if not patch_trainer_class(base):
            return False
        for actor_class in _ray_actor_classes(module, base):
            patch_ray_actor_class(actor_class, base)
            pin_to_creating_node(actor_class)
        driver = getattr(module, "PPOTrainerAsync", None)  # async: creates the TrainingActor
        if hasattr(driver, "__ray_metadata__"):
            pin_to_creating_node(driver)
        return True
    except Exception as exc:
        logger.warning("bai: could not patch %s: %r", module.__name__, exc)
        return False
