"""`bai-train`: OpenRLHF 0.11.2's train_ppo_ray with our `--bai.*` flags, the CPU mode and the
early-stop exit status; the hooks come in through `activate.arm`, as in a stock launch."""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import runpy
import sys
from collections.abc import Sequence
from dataclasses import replace

from bai_core.cli import EXIT_USAGE, UsageError
from bai_core.config import BaiConfig, add_options, from_namespace
from bai_core.constants import STOP_FILE
from bai_core.monitor import default_jsonl

from . import SUPPORTED_OPENRLHF
from .activate import CPU_ENV, SMOKE_ENV, arm, openrlhf_version
from .argv import absolutize_paths, check_placement, flag_value

logger = logging.getLogger("bai")

__all__ = ["main", "build_parser", "EXIT_EARLY_STOP", "OPENRLHF_MODULE"]

EXIT_EARLY_STOP = 3  # --bai.stop_on_collapse ended the run (0: finished; 1/2: failures, usage)
OPENRLHF_MODULE = "openrlhf.cli.train_ppo_ray"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="bai-train",
        add_help=False,
        allow_abbrev=False,
        description=f"OpenRLHF {SUPPORTED_OPENRLHF} PPO/REINFORCE++/GRPO (train_ppo_ray) plus "
        "BAI metrics and collapse detectors. --bai.* options are ours; every other option "
        "goes unchanged to OpenRLHF (its help follows).",
    )
    g = p.add_argument_group("BAI options")
    add_options(g, style="train")
    g.add_argument("--bai.cpu", dest="cpu", action="store_true",
                   help="run on a CPU-only machine (smoke test of a recipe; see README): "
                   "OpenRLHF's CUDA/NCCL calls patched from outside, Ray started on 127.0.0.1 "
                   "with the GPU count the recipe asks for")
    g.add_argument("-h", "--help", action="store_true", help="show this help and OpenRLHF's")
    return p


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


def _ray_started() -> bool:
    try:
        return bool("ray" in sys.modules and sys.modules["ray"].is_initialized())
    except Exception:
        return True


def _shutdown_ray() -> None:
    try:
        if _ray_started():
            sys.modules["ray"].shutdown()
    except Exception as exc:  # never mask the run's own outcome
        logger.info("bai: ray.shutdown failed: %r", exc)


def prepare(ns: argparse.Namespace, rest: list[str]) -> BaiConfig:
    """Everything checked before Ray starts; raises UsageError with the one-line problem."""
    config = from_namespace(ns)
    jsonl = config.jsonl or default_jsonl(flag_value(rest, "--ckpt.output_dir", "./ckpt"))
    config = replace(config, jsonl=os.path.abspath(jsonl))  # Ray workers may run elsewhere
    try:
        config.validate()
    except ValueError as exc:
        raise UsageError(exc) from None
    version = openrlhf_version()
    if version != SUPPORTED_OPENRLHF and not config.disable:
        raise UsageError(f"OpenRLHF {version} is installed, bai-train supports "
                         f"{SUPPORTED_OPENRLHF}: pip install openrlhf=={SUPPORTED_OPENRLHF}, or "
                         "add --bai.disable to run plain OpenRLHF without the bai metrics")
    if ns.cpu and version != SUPPORTED_OPENRLHF:
        raise UsageError(f"--bai.cpu supports OpenRLHF {SUPPORTED_OPENRLHF} only, found {version}")
    if ns.cpu:
        from .cpu_mode import check_argv

        problem = check_argv(rest)
    else:
        problem = check_placement(rest)
    if problem:
        raise UsageError(problem)
    return config


def main(argv: Sequence[str] | None = None) -> None:
    parser = build_parser()
    ns, rest = parser.parse_known_args(list(sys.argv[1:] if argv is None else argv))
    for leaked in (CPU_ENV, SMOKE_ENV):  # the CPU mode is --bai.cpu only here
        os.environ.pop(leaked, None)
    if ns.cpu:
        os.environ[CPU_ENV] = "1"
    if importlib.util.find_spec("flash_attn") is None:
        if not (ns.cpu or ns.help):
            parser.error("OpenRLHF needs flash-attn, which is not installed (GPU: pip install "
                         "flash-attn==2.8.3 --no-build-isolation); on a CPU-only machine add "
                         "--bai.cpu for a smoke test")
        from .cpu_mode import ensure_shim_path

        ensure_shim_path()  # CPU only (no flash-attn here): lets OpenRLHF's modules import
    if ns.help:
        parser.print_help()
        print(f"\n===== OpenRLHF {openrlhf_version()} train_ppo_ray options =====\n", flush=True)
        run_openrlhf(["--help"])  # argparse prints and exits
        return
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    rest = absolutize_paths(rest)
    try:
        config = prepare(ns, rest)
    except UsageError as exc:
        parser.error(str(exc))
    os.environ.update(config.to_env())
    armed = arm()
    if ns.cpu:
        from .cpu_mode import native_bf16, train_dtype

        dtype = train_dtype()
        why = "" if dtype == "bf16" or native_bf16() else (
            " (this CPU has no native bf16, AVX512-BF16 or AMX: emulated bf16 is ~400x slower)")
        logger.warning("bai: CPU mode (--bai.cpu): OpenRLHF's CUDA/NCCL calls are patched from "
                       "outside, Ray runs on 127.0.0.1, training and vLLM in %s%s; a smoke test, "
                       "not a training setup%s", dtype, why,
                       "" if armed else " (bai hooks off)")
    try:
        run_openrlhf(rest)
    except AssertionError as exc:
        if _ray_started():
            raise
        # OpenRLHF's own argument checks (asserts after its parser, before train() starts Ray)
        print(f"bai-train: error: {' '.join(str(exc).split()) or 'OpenRLHF rejected the options'}",
              file=sys.stderr, flush=True)
        sys.exit(EXIT_USAGE)
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
