"""`bai-train`: OpenRLHF 0.11.2's train_ppo_ray with the BAI hooks active in every Ray worker."""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import logging
import os
import runpy
import sys
from collections.abc import Iterator, Sequence
from typing import Any

from bai_core.config import BaiConfig
from bai_core.constants import STOP_FILE
from bai_core.monitor import default_jsonl

logger = logging.getLogger("bai")

__all__ = ["main", "build_parser", "split_argv", "absolutize_paths", "ray_resources",
           "OPENRLHF_MODULE", "SETUP_HOOK", "EXIT_EARLY_STOP"]

EXIT_EARLY_STOP = 3  # --bai.stop_on_collapse ended the run (0: finished; 1/2: failures, usage)
# OpenRLHF options naming local files or folders. Inputs become absolute when they exist here
# (otherwise they are hub ids); outputs always (Ray workers need not share our cwd).
_INPUT_PATHS = ("--actor.model_name_or_path", "--critic.model_name_or_path",
                "--reward.model_name_or_path", "--reward.remote_url", "--data.prompt_dataset",
                "--eval.dataset", "--train.agent_func_path")
_OUTPUT_PATHS = ("--ckpt.output_dir", "--ckpt.path", "--logger.tensorboard_dir")

OPENRLHF_MODULE = "openrlhf.cli.train_ppo_ray"
SETUP_HOOK = "openrlhf_patches.hooks.install"


def build_parser() -> argparse.ArgumentParser:
    d = BaiConfig()
    p = argparse.ArgumentParser(
        prog="bai-train",
        add_help=False,
        allow_abbrev=False,
        description="OpenRLHF 0.11.2 PPO/REINFORCE++/GRPO (train_ppo_ray) plus BAI metrics and "
        "collapse detectors. --bai.* options are ours; every other option goes unchanged to "
        "OpenRLHF (its help follows).",
    )
    g = p.add_argument_group("BAI options")
    g.add_argument("--bai.collapse_drop", type=float, default=d.collapse_drop,
                   help="length collapse when smoothed mean length < (1 - drop) x baseline "
                   "(default %(default)s)")
    g.add_argument("--bai.collapse_recover", type=float, default=d.collapse_recover,
                   help="collapse counts as recovered at this ratio to baseline "
                   "(default %(default)s)")
    g.add_argument("--bai.collapse_max_onset_step", type=int, default=d.collapse_max_onset_step,
                   help="only detect collapses starting up to this step; 0 = any step")
    g.add_argument("--bai.baseline_steps", type=int, default=d.baseline_steps,
                   help="steps averaged into the detectors' baseline (default %(default)s)")
    g.add_argument("--bai.ema", type=float, default=d.ema,
                   help="EMA weight of the newest value for the detectors; 1 = no smoothing "
                   "(default %(default)s)")
    g.add_argument("--bai.reward_dip_std", type=float, default=d.reward_dip_std,
                   help="reward dip needs a drop > this many baseline std (default %(default)s)")
    g.add_argument("--bai.reward_dip_rel", type=float, default=d.reward_dip_rel,
                   help="... and > this fraction of |baseline| (default %(default)s)")
    g.add_argument("--bai.reward_dip_abs", type=float, default=d.reward_dip_abs,
                   help="... and > this absolute amount (default %(default)s)")
    g.add_argument("--bai.bucket_width", type=int, default=d.bucket_width,
                   help="reward-by-length bucket width in tokens (default %(default)s)")
    g.add_argument("--bai.num_buckets", type=int, default=d.num_buckets,
                   help="number of reward-by-length buckets (default %(default)s)")
    g.add_argument("--bai.think_close_token", type=str, default=d.think_close_token,
                   help="token closing the think block (default %(default)s)")
    g.add_argument("--bai.jsonl", type=str, default=d.jsonl,
                   help="metrics JSONL path (default <ckpt.output_dir>/bai_metrics.jsonl)")
    g.add_argument("--bai.stop_on_collapse", action="store_true", default=False,
                   help="end the run after the step where a length collapse is detected: "
                   "the actor of that step is saved (HF format) to --ckpt.output_dir and "
                   f"bai-train exits with status {EXIT_EARLY_STOP}")
    g.add_argument("--bai.disable", action="store_true", default=False,
                   help="run plain OpenRLHF, no hooks")
    g.add_argument("--bai.cpu", action="store_true", default=False,
                   help="run on a CPU-only machine (smoke test of a recipe; see README): "
                   "OpenRLHF's CUDA/NCCL calls patched from outside, Ray started with the GPU "
                   "count the recipe asks for")
    g.add_argument("-h", "--help", action="store_true", help="show this help and OpenRLHF's")
    return p


def split_argv(argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
    """Our options (namespace) and the untouched rest, in order, for OpenRLHF's parser."""
    ns, rest = build_parser().parse_known_args(list(argv))
    return ns, rest


def _flag_value(argv: Sequence[str], flag: str, default: str | None = None) -> str | None:
    """The last value given to `flag` (`--flag v` or `--flag=v`) in argv."""
    value = default
    for i, arg in enumerate(argv):
        if arg == flag and i + 1 < len(argv):
            value = argv[i + 1]
        elif arg.startswith(flag + "="):
            value = arg.split("=", 1)[1]
    return value


def absolutize_paths(argv: Sequence[str], cwd: str | None = None) -> list[str]:
    """argv with relative local paths made absolute (see _INPUT_PATHS / _OUTPUT_PATHS)."""
    cwd = cwd or os.getcwd()
    out = list(argv)

    def fix(flag: str, value: str) -> str:
        if not value or os.path.isabs(value) or "://" in value:
            return value
        full = os.path.normpath(os.path.join(cwd, os.path.expanduser(value)))
        if flag in _OUTPUT_PATHS or os.path.exists(full):
            return full
        return value

    for i, arg in enumerate(out):
        flag, eq, inline = arg.partition("=")
        if flag not in _INPUT_PATHS + _OUTPUT_PATHS:
            continue
        if eq:
            out[i] = f"{flag}={fix(flag, inline)}"
        elif i + 1 < len(out) and not out[i + 1].startswith("--"):
            out[i + 1] = fix(flag, out[i + 1])
    return out


def ray_resources(argv: Sequence[str]) -> dict[str, int]:
    """GPUs the OpenRLHF argv asks Ray for (OpenRLHF's defaults), for a CPU-only Ray head."""
    def count(role: str) -> int:
        return (int(_flag_value(argv, f"--{role}.num_nodes", "1"))
                * int(_flag_value(argv, f"--{role}.num_gpus_per_node", "8")))

    gpus = count("actor")
    if float(_flag_value(argv, "--algo.kl.init_coef", "0.01")) > 0:
        gpus += count("ref")
    if _flag_value(argv, "--critic.model_name_or_path"):
        gpus += count("critic")
    if not _flag_value(argv, "--reward.remote_url") and _flag_value(
            argv, "--reward.model_name_or_path"):
        gpus += count("reward")
    engines = int(_flag_value(argv, "--vllm.num_engines", "0") or 0)
    gpus += engines * int(_flag_value(argv, "--vllm.tensor_parallel_size", "1"))
    return {"num_gpus": gpus, "num_cpus": max(os.cpu_count() or 1, gpus + 2)}


def config_from_args(ns: argparse.Namespace, rest: Sequence[str]) -> BaiConfig:
    opts = {k.split(".", 1)[1]: v for k, v in vars(ns).items()
            if k.startswith("bai.") and k != "bai.cpu"}
    if not opts["jsonl"]:
        opts["jsonl"] = default_jsonl(_flag_value(rest, "--ckpt.output_dir", "./ckpt"))
    opts["jsonl"] = os.path.abspath(opts["jsonl"])  # Ray workers may run in another cwd
    return BaiConfig(**opts)


def validate(config: BaiConfig) -> None:
    """Raise ValueError naming the option and value the detectors or metrics would reject."""
    config.validate()


def runtime_env(config: BaiConfig, cpu: bool = False) -> dict:
    """What bai-train adds to the runtime_env of OpenRLHF's own ray.init: our BAI_* env vars
    (and the CPU mode's), and our worker setup hook."""
    env = dict(config.to_env())
    if cpu:
        from .cpu_mode import env_vars

        env.update(env_vars())
    out: dict = {"env_vars": env}
    if cpu or not config.disable:
        out["worker_process_setup_hook"] = SETUP_HOOK
    return out


@contextlib.contextmanager
def ray_init_merged(extra: dict, init_kwargs: dict[str, Any]) -> Iterator[dict]:
    """While OpenRLHF runs, its own `ray.init(runtime_env=...)` (made in train(), i.e. after its
    parser accepted the argv) also gets `extra` merged in and `init_kwargs` as defaults."""
    import ray

    original = ray.init
    calls: dict = {"count": 0}

    def init(*args: Any, **kwargs: Any) -> Any:
        runtime_env = dict(kwargs.pop("runtime_env", None) or {})
        env = dict(runtime_env.get("env_vars") or {})
        env.update(extra.get("env_vars", {}))
        runtime_env["env_vars"] = env
        if "worker_process_setup_hook" in extra:
            runtime_env["worker_process_setup_hook"] = extra["worker_process_setup_hook"]
        for key, value in init_kwargs.items():
            kwargs.setdefault(key, value)
        calls["count"] += 1
        logger.info("bai: ray.init(%s) with the BAI worker setup hook",
                    ", ".join(f"{k}={v}" for k, v in init_kwargs.items()))
        return original(*args, runtime_env=runtime_env, **kwargs)

    ray.init = init
    try:
        yield calls
    finally:
        ray.init = original


def run_openrlhf(argv: Sequence[str]) -> None:
    """Run OpenRLHF's own CLI module unchanged with `argv` as its arguments."""
    saved = sys.argv
    sys.argv = [OPENRLHF_MODULE, *argv]
    try:
        runpy.run_module(OPENRLHF_MODULE, run_name="__main__", alter_sys=True)
    finally:
        sys.argv = saved


def _early_stop_of(exc: BaseException) -> BaseException | None:
    """The BaiEarlyStop inside `exc` (Ray wraps it in a RayTaskError), if any."""
    from .hooks import BaiEarlyStop

    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, BaiEarlyStop):
            return exc
        exc = getattr(exc, "cause", None) or exc.__cause__
    return None


def _stop_line(exc: BaseException, config: BaiConfig) -> str:
    record = os.path.join(os.path.dirname(config.jsonl), STOP_FILE)
    try:
        with open(record, encoding="utf-8") as fh:
            info = json.load(fh)
        line = info["evidence"]
        if info.get("actor_dir"):
            line += f"; actor saved to {info['actor_dir']}"
        return line
    except (OSError, ValueError, KeyError):
        return str(exc).splitlines()[0] if str(exc) else "Sequence Length Collapse"


def _shutdown_ray() -> None:
    try:
        import ray

        if ray.is_initialized():
            ray.shutdown()
    except Exception as exc:  # never mask the run's own outcome
        logger.info("bai: ray.shutdown failed: %r", exc)


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    ns, rest = split_argv(argv)
    cpu = bool(getattr(ns, "bai.cpu"))
    if importlib.util.find_spec("flash_attn") is None:
        if not (cpu or ns.help):
            build_parser().error("OpenRLHF needs flash-attn, which is not installed (GPU: pip "
                                 "install flash-attn==2.8.3 --no-build-isolation); on a "
                                 "CPU-only machine add --bai.cpu for a smoke test")
        from .cpu_mode import ensure_shim_path

        ensure_shim_path()  # CPU only (no flash-attn here): lets OpenRLHF's modules import
    if ns.help:
        build_parser().print_help()
        print("\n===== OpenRLHF 0.11.2 train_ppo_ray options =====\n", flush=True)
        run_openrlhf(["--help"])  # argparse prints and exits
        return
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    rest = absolutize_paths(rest)
    config = config_from_args(ns, rest)
    try:
        validate(config)
    except ValueError as exc:
        build_parser().error(str(exc))
    init_kwargs: dict[str, Any] = {}
    if cpu:
        from . import SUPPORTED_OPENRLHF
        from .cpu_mode import check_argv
        from .cpu_mode import install as install_cpu_mode
        from .hooks import openrlhf_version

        if openrlhf_version() != SUPPORTED_OPENRLHF:
            build_parser().error(f"--bai.cpu supports OpenRLHF {SUPPORTED_OPENRLHF} only, "
                                 f"found {openrlhf_version()}")
        problem = check_argv(rest)
        if problem:
            build_parser().error(problem)
        if not install_cpu_mode():
            build_parser().error("--bai.cpu is for machines without CUDA; drop it on a GPU")
        init_kwargs = {"address": "local", "include_dashboard": False, **ray_resources(rest)}
        logger.warning("bai: CPU mode (--bai.cpu): OpenRLHF's CUDA/NCCL calls are patched from "
                       "outside, Ray gets %d logical GPUs on CPU; a smoke test, not a training "
                       "setup", init_kwargs["num_gpus"])
    os.environ.update(config.to_env())
    if not config.disable:
        from .hooks import install

        install()  # this process too: patches the Ray actor class before it is shipped
    try:
        with ray_init_merged(runtime_env(config, cpu), init_kwargs):
            run_openrlhf(rest)
    except Exception as exc:
        stop = _early_stop_of(exc)
        if stop is None:
            raise
        _shutdown_ray()
        print(f"bai-train: early stop: {_stop_line(stop, config)}", file=sys.stderr, flush=True)
        sys.exit(EXIT_EARLY_STOP)
    finally:
        _shutdown_ray()


if __name__ == "__main__":
    main()
