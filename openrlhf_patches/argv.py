"""OpenRLHF argv arithmetic, checked before Ray starts: flag values, paths, GPU placement."""

from __future__ import annotations

import os
from collections.abc import Sequence

__all__ = ["absolutize_paths", "check_placement", "flag_value", "flag_values", "ray_resources"]

# OpenRLHF options naming local files or folders. Inputs become absolute when they exist here
# (otherwise they are hub ids); outputs always (Ray workers need not share our cwd).
_INPUT_PATHS = ("--actor.model_name_or_path", "--critic.model_name_or_path",
                "--reward.model_name_or_path", "--reward.remote_url", "--data.prompt_dataset",
                "--eval.dataset", "--train.agent_func_path")
_OUTPUT_PATHS = ("--ckpt.output_dir", "--ckpt.path", "--logger.tensorboard_dir")


def flag_values(argv: Sequence[str]) -> dict[str, str | None]:
    """Last value of each `--flag value` / `--flag=value` / bare `--flag` (None) in argv."""
    out: dict[str, str | None] = {}
    for i, arg in enumerate(argv):
        if not arg.startswith("--"):
            continue
        if "=" in arg:
            key, value = arg.split("=", 1)
            out[key] = value
            continue
        nxt = argv[i + 1] if i + 1 < len(argv) else None
        out[arg] = None if nxt is None or nxt.startswith("--") else nxt
    return out


def flag_value(argv: Sequence[str], flag: str, default: str | None = None) -> str | None:
    """The last value given to `flag` in argv, else `default`."""
    value = flag_values(argv).get(flag)
    return default if value is None else value


def absolutize_paths(argv: Sequence[str], cwd: str | None = None) -> list[str]:
    """argv with relative local paths made absolute (see _INPUT_PATHS / _OUTPUT_PATHS)."""
    cwd = cwd or os.getcwd()
    out = list(argv)

    def fix(flag: str, value: str) -> str:
        if not value or os.path.isabs(value) or "://" in value:
            return value
        full = os.path.normpath(os.path.join(cwd, os.path.expanduser(value)))
        return full if flag in _OUTPUT_PATHS or os.path.exists(full) else value

    for i, arg in enumerate(out):
        flag, eq, inline = arg.partition("=")
        if flag not in _INPUT_PATHS + _OUTPUT_PATHS:
            continue
        if eq:
            out[i] = f"{flag}={fix(flag, inline)}"
        elif i + 1 < len(out) and not out[i + 1].startswith("--"):
            out[i + 1] = fix(flag, out[i + 1])
    return out


def _int(argv: Sequence[str], flag: str, default: str) -> int:
    raw = flag_value(argv, flag, default)
    try:
        return int(raw)
    except (TypeError, ValueError):
        raise ValueError(f"{flag} must be an integer, got {raw!r}") from None


def _gpus(argv: Sequence[str], role: str) -> int:
    return _int(argv, f"--{role}.num_nodes", "1") * _int(argv, f"--{role}.num_gpus_per_node", "8")


def _roles(argv: Sequence[str]) -> list[str]:
    """The roles that get GPUs for this argv, with OpenRLHF 0.11.2's defaults."""
    flags = flag_values(argv)
    roles = ["actor"]
    if float(flag_value(argv, "--algo.kl.init_coef", "0.01")) > 0:
        roles.append("ref")
    if flags.get("--critic.model_name_or_path"):
        roles.append("critic")
    if not flags.get("--reward.remote_url") and flags.get("--reward.model_name_or_path"):
        roles.append("reward")
    return roles


def ray_resources(argv: Sequence[str]) -> dict[str, int]:
    """GPUs the OpenRLHF argv asks Ray for (OpenRLHF's defaults), for a CPU-only Ray head."""
    gpus = sum(_gpus(argv, role) for role in _roles(argv))
    gpus += _int(argv, "--vllm.num_engines", "0") * _int(argv, "--vllm.tensor_parallel_size", "1")
    return {"num_gpus": gpus, "num_cpus": max(os.cpu_count() or 1, gpus + 2)}


def check_placement(argv: Sequence[str]) -> str | None:
    """The first placement OpenRLHF 0.11.2's train() would assert on only after Ray is up, as one
    line, else None: colocated roles of one shape, colocated vLLM engines x TP = the actor's GPUs,
    TP within a node, a GPU memory share in (0, 1], positive integer counts."""
    flags = flag_values(argv)
    try:
        tp = _int(argv, "--vllm.tensor_parallel_size", "1")
        engines = _int(argv, "--vllm.num_engines", "0")
        actor = _gpus(argv, "actor")
        for role in _roles(argv):
            for what in ("num_nodes", "num_gpus_per_node"):
                if _int(argv, f"--{role}.{what}", "1") < 1:
                    return f"--{role}.{what} must be >= 1"
    except ValueError as exc:
        return str(exc)
    if tp < 1 or engines < 0:
        return "--vllm.tensor_parallel_size must be >= 1 and --vllm.num_engines >= 0"
    colocated = "--train.colocate_all" in flags and "--train.async_enable" not in flags
    pairs = []
    together = {"--train.colocate_all", "--train.colocate_actor_ref"} & set(flags)
    if "ref" in _roles(argv) and together:
        pairs.append(("actor", "ref"))
    if "critic" in _roles(argv) and "--train.colocate_critic_reward" in flags:
        pairs.append(("critic", "reward"))
    for a, b in pairs:
        for what, default in (("num_nodes", "1"), ("num_gpus_per_node", "8")):
            got = (_int(argv, f"--{a}.{what}", default), _int(argv, f"--{b}.{what}", default))
            if got[0] != got[1]:
                return (f"colocating {a} and {b} needs the same --{a}.{what} and --{b}.{what}, "
                        f"got {got[0]} and {got[1]}")
    if engines and colocated and (engines * tp) != actor:
        return (f"--train.colocate_all puts every vLLM engine on the actor's GPUs: "
                f"--vllm.num_engines {engines} x --vllm.tensor_parallel_size {tp} = "
                f"{engines * tp} must equal --actor.num_nodes x --actor.num_gpus_per_node = "
                f"{actor}")
    if engines and tp > _int(argv, "--actor.num_gpus_per_node", "8") and colocated:
        return (f"--vllm.tensor_parallel_size {tp} does not fit in one node of "
                f"--actor.num_gpus_per_node {_int(argv, '--actor.num_gpus_per_node', '8')}")
    share = flags.get("--vllm.gpu_memory_utilization")
    if share is not None:
        try:
            ok = 0.0 < float(share) <= 1.0
        except ValueError:
            ok = False
        if not ok:
            return f"--vllm.gpu_memory_utilization must be in (0, 1], got {share!r}"
    return None
