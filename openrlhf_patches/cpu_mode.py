"""`bai-train --bai.cpu`: OpenRLHF 0.11.2 on a CPU-only machine, patched from outside (smoke tests).

OpenRLHF 0.11.2 calls CUDA and NCCL unconditionally in a handful of places (DESIGN.md 3c).
`install()` runs in the driver and, through the Ray worker setup hook, in every Ray worker when
BAI_CPU=1; the vLLM engine-core process gets `cpu_worker.CpuWorkerWrap` as its worker extension.
Nothing here is imported unless CPU mode was asked for, and nothing runs where CUDA is available.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.util
import logging
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

from .post_import import when_imported

logger = logging.getLogger("bai")

__all__ = ["install", "env_vars", "check_argv", "ensure_shim_path", "TcpBroadcastGroup",
           "tcp_init_process_group", "CPU_ENV", "OPENRLHF_WORKER_WRAP", "CPU_WORKER_WRAP"]

CPU_ENV = "BAI_CPU"
SHIM_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "cpu_shims")
OPENRLHF_WORKER_WRAP = "openrlhf.trainer.ray.vllm_worker_wrap.WorkerWrap"
CPU_WORKER_WRAP = "openrlhf_patches.cpu_worker.CpuWorkerWrap"

# set for the driver and every Ray worker (runtime_env); user-set values win
_ENV_DEFAULTS = {
    CPU_ENV: "1",
    "DS_ACCELERATOR": "cpu",          # DeepSpeed's CPU accelerator (gloo, CPU ops)
    "VLLM_CPU_KVCACHE_SPACE": "1",    # GiB of KV cache per vLLM CPU engine
    "TOKENIZERS_PARALLELISM": "false",
}

# flags CPU mode needs (flag -> required value; None = the flag itself must be given)
REQUIRED = {
    "--vllm.sync_backend": "gloo",
    "--vllm.enforce_eager": None,
    "--ds.attn_implementation": "eager",
}
# flags whose code paths still call CUDA (not reached by the CPU mode)
UNSUPPORTED = {
    "--train.colocate_all": "colocation uses CUDA IPC and sleep mode",
    "--train.colocate_actor_ref": "colocation uses fractional GPUs per process",
    "--train.colocate_critic_reward": "colocation uses fractional GPUs per process",
    "--vllm.enable_sleep": "vLLM sleep mode needs CUDA",
    "--ds.enable_sleep": "DeepSpeed sleep mode needs CUDA",
    "--train.async_enable": "async training was not run on CPU",
    "--train.enable_ema": "EMA uses CUDA (ppo_actor.py)",
    "--ds.packing_samples": "packing needs flash-attn varlen kernels",
    "--vllm.sync_with_ray": "ray.util.collective needs NCCL",
}

_installed = False


def extensions_dir() -> str:
    """Where DeepSpeed's JIT-built CPU ops (fused_adam, shm comm) are cached: one folder per
    Python environment, so two venvs never rebuild, or wait on, each other's builds."""
    tag = hashlib.sha1(sys.prefix.encode()).hexdigest()[:12]
    return os.path.join(os.path.expanduser("~"), ".cache", "bai", "torch_extensions", tag)


def clear_stale_build_locks(root: str, max_age_s: float = 900.0) -> list[str]:
    """Remove torch extension `lock` files older than `max_age_s` (a build takes ~2-3 min):
    a build killed mid-way leaves one, and every later build then waits on it forever."""
    removed = []
    if not os.path.isdir(root):
        return removed
    now = time.time()
    for name in os.listdir(root):
        lock = os.path.join(root, name, "lock")
        try:
            if now - os.path.getmtime(lock) > max_age_s:
                os.remove(lock)
                removed.append(lock)
        except OSError:
            continue
    for lock in removed:
        logger.warning("bai: removed a stale torch extension build lock %s", lock)
    return removed


def env_vars() -> dict[str, str]:
    """The environment the CPU mode adds for the driver and the Ray workers."""
    defaults = dict(_ENV_DEFAULTS, TORCH_EXTENSIONS_DIR=extensions_dir())
    return {k: os.environ.get(k, v) for k, v in defaults.items()}


def _flag_values(argv: Sequence[str]) -> dict[str, str | None]:
    """Last value of each `--flag value` / `--flag=value` / bare `--flag` in argv."""
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


def check_argv(argv: Sequence[str]) -> str | None:
    """The first OpenRLHF option the CPU mode cannot run, as one message; None if all is fine."""
    flags = _flag_values(argv)
    for flag, why in UNSUPPORTED.items():
        if flag in flags:
            return f"--bai.cpu cannot run {flag}: {why}"
    for flag, value in REQUIRED.items():
        if flag not in flags:
            need = f"{flag} {value}" if value else flag
            return f"--bai.cpu needs {need} (missing {flag})"
        if value is not None and flags[flag] != value:
            return f"--bai.cpu needs {flag} {value}, got {flags[flag]!r}"
    ring = flags.get("--ds.ring_attn_size")
    if ring not in (None, "1"):
        return f"--bai.cpu cannot run --ds.ring_attn_size {ring}: ring attention needs CUDA"
    return None


def ensure_shim_path() -> None:
    """Make `flash_attn` importable on CPU: our stand-in goes LAST on sys.path, so a real
    flash-attn always wins. Only CPU mode (and the tests) call this."""
    if importlib.util.find_spec("flash_attn") is None and SHIM_DIR not in sys.path:
        sys.path.append(SHIM_DIR)
    paths = os.environ.get("PYTHONPATH", "").split(os.pathsep)
    if SHIM_DIR not in paths:  # processes that vLLM spawns find it too
        os.environ["PYTHONPATH"] = os.pathsep.join([p for p in paths if p] + [SHIM_DIR])


class TcpBroadcastGroup:
    """OpenRLHF's `_model_update_group.broadcast(...)` over vLLM's `StatelessProcessGroup`
    (a TCP store) instead of PyNccl: rank `src` publishes each tensor, the others copy it in."""

    def __init__(self, pg: Any) -> None:
        self.pg = pg

    def broadcast(self, tensor: Any, src: int = 0, stream: Any = None) -> Any:
        if self.pg.rank == src:
            # clone: a parameter is often a view into one flat DeepSpeed buffer, and pickling a
            # view pickles the whole storage behind it
            self.pg.broadcast_obj(tensor.detach().to("cpu").clone(), src=src)
        else:
            tensor.copy_(self.pg.broadcast_obj(None, src=src))
        return tensor


def tcp_init_process_group(master_address: str, master_port: int, rank: int, world_size: int,
                           device: Any = None) -> TcpBroadcastGroup:
    """Drop-in for `openrlhf.utils.distributed_util.stateless_init_process_group` on CPU."""
    from vllm.distributed.utils import StatelessProcessGroup

    pg = StatelessProcessGroup.create(host=master_address, port=master_port, rank=rank,
                                      world_size=world_size)
    return TcpBroadcastGroup(pg)


def _cpu_device() -> Any:
    import torch

    return torch.device("cpu")


def _noop(name: str):
    """A no-op named `name`, one object per patched attribute (torch._dynamo's rule tables
    refuse one function registered under two torch names)."""

    def noop(*args: Any, **kwargs: Any) -> None:
        return None

    noop.__name__ = noop.__qualname__ = name
    return noop


def _patch_torch_cuda() -> None:
    """CPU answers for the torch.cuda calls OpenRLHF makes unconditionally."""
    import torch

    torch.cuda.current_device = _cpu_device  # used as `.to(device)` / `device=`
    torch.cuda.set_device = _noop("set_device")
    torch.cuda.synchronize = _noop("synchronize")
    torch.cuda.empty_cache = _noop("empty_cache")
    torch.cuda.current_stream = _noop("current_stream")  # only passed on as `stream=` to TCP


@contextlib.contextmanager
def _cuda_index_zero():
    """`torch.cuda.current_device()` -> 0 for code that formats it into "cuda:{...}"."""
    import torch

    saved = torch.cuda.current_device
    torch.cuda.current_device = lambda: 0
    try:
        yield
    finally:
        torch.cuda.current_device = saved


def _patch_deepspeed_strategy(module: Any) -> None:
    original = module.init_device_mesh

    @functools.wraps(original)
    def init_device_mesh(device_type: str, *args: Any, **kwargs: Any) -> Any:
        return original("cpu" if device_type == "cuda" else device_type, *args, **kwargs)

    module.init_device_mesh = init_device_mesh


def _patch_replay_buffer(module: Any) -> None:
    import torch

    cls = module.NaiveReplayBuffer
    original = cls.__init__

    @functools.wraps(original)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        with _cuda_index_zero():
            original(self, *args, **kwargs)
        self.target_device = torch.device("cpu")

    cls.__init__ = __init__


def _patch_sync_group(module: Any) -> None:
    """Both the definition and the name `ppo_actor` imported from it."""
    module.stateless_init_process_group = tcp_init_process_group


def _patch_vllm_engine_args(module: Any) -> None:
    """RolloutRayActor builds `vllm.AsyncEngineArgs(worker_extension_cls=WorkerWrap, ...)`: use
    our CPU subclass instead (the engine core runs in a process vLLM spawns, where only the
    extension class's own import runs)."""
    original = module.AsyncEngineArgs
    if getattr(original, "_bai_cpu", False):
        return

    @functools.wraps(original)
    def AsyncEngineArgs(*args: Any, **kwargs: Any) -> Any:  # noqa: N802 (same name as vLLM's)
        if kwargs.get("worker_extension_cls") == OPENRLHF_WORKER_WRAP:
            kwargs["worker_extension_cls"] = CPU_WORKER_WRAP
        return original(*args, **kwargs)

    AsyncEngineArgs._bai_cpu = True
    module.AsyncEngineArgs = AsyncEngineArgs


def install() -> bool:
    """Apply the CPU mode in this process (idempotent); False where CUDA is available."""
    global _installed
    if _installed:
        return True
    import torch

    if torch.cuda.is_available():
        logger.warning("bai: CUDA is available: --bai.cpu patches NOT applied in this process")
        return False
    for key, value in env_vars().items():
        os.environ.setdefault(key, value)
    clear_stale_build_locks(os.environ["TORCH_EXTENSIONS_DIR"])
    ensure_shim_path()
    _patch_torch_cuda()
    when_imported("openrlhf.utils.deepspeed.deepspeed", _patch_deepspeed_strategy)
    when_imported("openrlhf.trainer.ppo_utils.replay_buffer", _patch_replay_buffer)
    when_imported("openrlhf.utils.distributed_util", _patch_sync_group)
    when_imported("openrlhf.trainer.ray.ppo_actor", _patch_sync_group)
    when_imported("vllm", _patch_vllm_engine_args)
    _installed = True
    return True
