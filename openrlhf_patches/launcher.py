"""`bai-train`: OpenRLHF 0.11.2's train_ppo_ray with the BAI hooks active in every Ray worker."""

from __future__ import annotations

import argparse
import logging
import os
import runpy
import sys
from collections.abc import Sequence

from .config import BaiConfig

logger = logging.getLogger("bai")

__all__ = ["main", "build_parser", "split_argv", "OPENRLHF_MODULE", "SETUP_HOOK"]

OPENRLHF_MODULE = "openrlhf.cli.train_ppo_ray"
SETUP_HOOK = "openrlhf_patches.hooks.install"
# env vars OpenRLHF's train() puts in its own ray.init runtime_env (same defaults)
_OPENRLHF_ENV_DEFAULTS = {
    "TOKENIZERS_PARALLELISM": "true",
    "NCCL_DEBUG": "WARN",
    "RAY_ENABLE_ZERO_COPY_TORCH_TENSORS": "1",
}


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
                   help="end the run (BaiEarlyStop) after the step where collapse is detected")
    g.add_argument("--bai.disable", action="store_true", default=False,
                   help="run plain OpenRLHF, no hooks")
    g.add_argument("-h", "--help", action="store_true", help="show this help and OpenRLHF's")
    return p


def split_argv(argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
    """Our options (namespace) and the untouched rest, in order, for OpenRLHF's parser."""
    ns, rest = build_parser().parse_known_args(list(argv))
    return ns, rest


def config_from_args(ns: argparse.Namespace, rest: Sequence[str]) -> BaiConfig:
    opts = {k.split(".", 1)[1]: v for k, v in vars(ns).items() if k.startswith("bai.")}
    if not opts["jsonl"]:
        out = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
        out.add_argument("--ckpt.output_dir", default="./ckpt")
        known, _ = out.parse_known_args(list(rest))
        opts["jsonl"] = os.path.join(getattr(known, "ckpt.output_dir"), "bai_metrics.jsonl")
    opts["jsonl"] = os.path.abspath(opts["jsonl"])  # Ray workers may run in another cwd
    return BaiConfig(**opts)


def validate(config: BaiConfig) -> None:
    """Raise ValueError for settings the detectors or metrics would reject."""
    from .monitor import BaiMonitor

    BaiMonitor(config)  # builds both detectors with these thresholds
    if config.bucket_width <= 0 or config.num_buckets <= 0:
        raise ValueError("--bai.bucket_width and --bai.num_buckets must be positive")


def runtime_env(config: BaiConfig) -> dict:
    """The runtime_env for ray.init: OpenRLHF's env vars, ours, and our setup hook."""
    env = {k: os.environ.get(k, v) for k, v in _OPENRLHF_ENV_DEFAULTS.items()}
    env.update(config.to_env())
    out: dict = {"env_vars": env}
    if not config.disable:
        out["worker_process_setup_hook"] = SETUP_HOOK
    return out


def init_ray(config: BaiConfig) -> None:
    """ray.init before OpenRLHF's train(), which then skips its own ray.init."""
    import ray

    if ray.is_initialized():
        logger.warning("bai: Ray already initialized; BAI hooks reach only workers started "
                       "with our runtime_env")
        return
    ray.init(runtime_env=runtime_env(config))


def run_openrlhf(argv: Sequence[str]) -> None:
    """Run OpenRLHF's own CLI module unchanged with `argv` as its arguments."""
    saved = sys.argv
    sys.argv = [OPENRLHF_MODULE, *argv]
    try:
        runpy.run_module(OPENRLHF_MODULE, run_name="__main__", alter_sys=True)
    finally:
        sys.argv = saved


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    ns, rest = split_argv(argv)
    if ns.help:
        build_parser().print_help()
        print("\n===== OpenRLHF 0.11.2 train_ppo_ray options =====\n", flush=True)
        run_openrlhf(["--help"])  # argparse prints and exits
        return
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    config = config_from_args(ns, rest)
    try:
        validate(config)
    except ValueError as exc:
        build_parser().error(str(exc))
    os.environ.update(config.to_env())
    if not config.disable:
        from .hooks import install

        install()  # this process too (harmless; covers in-process trainers)
        init_ray(config)
    run_openrlhf(rest)


if __name__ == "__main__":
    main()
