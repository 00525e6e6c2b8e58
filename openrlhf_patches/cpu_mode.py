"""`bai-train --bai.cpu`: OpenRLHF 0.11.2 on a CPU-only machine, patched from outside (smoke tests).

OpenRLHF 0.11.2 calls CUDA and NCCL unconditionally in a handful of places. `install()` runs
(through `activate.arm`) in the driver and in every Ray worker when BAI_CPU=1; the vLLM
engine-core process gets `cpu_worker.CpuWorkerWrap` as its worker extension.
Nothing here is imported unless CPU mode was asked for, and nothing runs where CUDA is available.
"""

from __future__ import annotations

import glob
import hashlib
import importlib.util
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from bai_autoload import when_imported

from .activate import CPU_ENV, wrap
from .argv import flag_values

logger = logging.getLogger("bai")

__all__ = ["install", "env_vars", "check_argv", "ensure_shim_path", "TcpBroadcastGroup",
           "tcp_init_process_group", "CPU_ENV", "OPENRLHF_WORKER_WRAP", "CPU_WORKER_WRAP"]

DTYPE_ENV = "BAI_CPU_DTYPE"  # "bf16" or "fp32"; default: bf16 only where the CPU computes it
SHIM_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "cpu_shims")
OPENRLHF_WORKER_WRAP = "openrlhf.trainer.ray.vllm_worker_wrap.WorkerWrap"
CPU_WORKER_WRAP = "openrlhf_patches.cpu_worker.CpuWorkerWrap"

# set for the driver and every Ray worker (runtime_env); user-set values win
_ENV_DEFAULTS = {
    CPU_ENV: "1",
    "DS_ACCELERATOR": "cpu",          # DeepSpeed's CPU accelerator (gloo, CPU ops)
    "VLLM_CPU_KVCACHE_SPACE": "1",    # GiB of KV cache per vLLM CPU engine
    # the engine core in the rollout actor's process, not two more processes (engine core and
    # worker) that import torch and vLLM again: about 20 CPU-seconds a run; vLLM's CPU backend
    # then keeps its one-process executor (no OpenMP thread binding, which tiny models miss not)
    "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
    "TOKENIZERS_PARALLELISM": "false",
    # loopback only: with Ray's cluster mode off, its node IP is 127.0.0.1 and every Ray server
    # binds there (a node IP of "127.0.0.1" alone is replaced by the interface address)
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "RAY_USAGE_STATS_ENABLED": "0",
    "VLLM_HOST_IP": "127.0.0.1",
    "VLLM_NO_USAGE_STATS": "1",
    "GLOO_SOCKET_IFNAME": "lo",
    # no telemetry either: `datasets.load_dataset` of a local file HEADs s3.amazonaws.com
    "HF_UPDATE_DOWNLOAD_COUNTS": "0",
    "HF_HUB_DISABLE_TELEMETRY": "1",
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
    for lock in glob.glob(os.path.join(glob.escape(root), "*", "lock")):
        try:
            if time.time() - os.path.getmtime(lock) > max_age_s:
                os.remove(lock)
                removed.append(lock)
                logger.warning("bai: removed a stale torch extension build lock %s", lock)
        except OSError:
            continue
    return removed


def native_bf16() -> bool:
    """Whether this CPU has bf16 arithmetic (AVX512-BF16 or AMX); elsewhere torch emulates bf16
    matmuls, hundreds of times slower than fp32."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            return bool({"avx512_bf16", "amx_bf16"} & set(fh.read().split()))
    except OSError:
        return False


def train_dtype() -> str:
    """The CPU mode's dtype for training and vLLM: BAI_CPU_DTYPE, else bf16 only on native bf16."""
    choice = os.environ.get(DTYPE_ENV, "").strip().lower()
    if choice in ("bf16", "fp32"):
        return choice
    return "bf16" if native_bf16() else "fp32"


def env_vars() -> dict[str, str]:
    """The environment the CPU mode adds for the driver and the Ray workers."""
    defaults = dict(_ENV_DEFAULTS, TORCH_EXTENSIONS_DIR=extensions_dir())
    defaults[DTYPE_ENV] = train_dtype()  # the driver decides, every worker follows
    return {k: os.environ.get(k, v) for k, v in defaults.items()}


def check_argv(argv: Sequence[str]) -> str | None:
    """The first OpenRLHF option the CPU mode cannot run, as one message; None if all is fine."""
    flags = flag_values(argv)
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

    return TcpBroadcastGroup(StatelessProcessGroup.create(
        host=master_address, port=master_port, rank=rank, world_size=world_size))


def _noop(name: str) -> Callable[..., None]:
    """A no-op named `name`, one object per patched attribute (torch._dynamo's rule tables
    refuse one function registered under two torch names)."""

    def noop(*args: Any, **kwargs: Any) -> None:
        return None

    noop.__name__ = noop.__qualname__ = name
    return noop


def _patch_torch_cuda() -> None:
    """CPU answers for the torch.cuda calls OpenRLHF makes unconditionally."""
    import torch

    def current_device() -> Any:  # used as `.to(device)` / `device=`
        return torch.device("cpu")

    torch.cuda.current_device = current_device
    # current_stream is only passed on as `stream=` to the TCP broadcast
    for name in ("set_device", "synchronize", "empty_cache", "current_stream"):
        setattr(torch.cuda, name, _noop(name))


def _device_mesh(original: Any, device_type: str, *args: Any, **kwargs: Any) -> Any:
    return original("cpu" if device_type == "cuda" else device_type, *args, **kwargs)


def _replay_buffer_init(original: Any, self: Any, *args: Any, **kwargs: Any) -> None:
    """NaiveReplayBuffer formats `torch.cuda.current_device()` into "cuda:{...}": 0 there."""
    import torch

    saved, torch.cuda.current_device = torch.cuda.current_device, lambda: 0
    try:
        original(self, *args, **kwargs)
    finally:
        torch.cuda.current_device = saved
    self.target_device = torch.device("cpu")


def _engine_args(original: Any, *args: Any, **kwargs: Any) -> Any:
    """RolloutRayActor builds `vllm.AsyncEngineArgs(worker_extension_cls=WorkerWrap, ...)`: use
    our CPU subclass instead (the engine core runs in a process vLLM spawns, where only the
    extension class's own import runs)."""
    if kwargs.get("worker_extension_cls") == OPENRLHF_WORKER_WRAP:
        kwargs["worker_extension_cls"] = CPU_WORKER_WRAP
        if train_dtype() == "fp32" and kwargs.get("dtype") == "bfloat16":
            kwargs["dtype"] = "float32"  # the dtype DeepSpeed trains in, for the sync
    return original(*args, **kwargs)


def _init_process_group(original: Any, backend: Any = None, init_method: Any = None,
                        timeout: Any = None, world_size: int = -1, rank: int = -1,
                        store: Any = None, **kwargs: Any) -> Any:
    """torch's TCPStore (DeepSpeed's `env://` rendezvous) listens on `::` whatever MASTER_ADDR
    says: with a loopback MASTER_ADDR, rank 0 gets a store on a socket bound to 127.0.0.1."""
    import datetime
    import socket

    import torch.distributed as dist

    addr = os.environ.get("MASTER_ADDR", "")
    if store is not None or init_method not in (None, "env://") or addr != "127.0.0.1":
        return original(backend, init_method=init_method, timeout=timeout,
                        world_size=world_size, rank=rank, store=store, **kwargs)
    rank = int(os.environ["RANK"]) if rank == -1 else rank
    world_size = int(os.environ["WORLD_SIZE"]) if world_size == -1 else world_size
    port = int(os.environ["MASTER_PORT"])
    wait = timeout or datetime.timedelta(minutes=30)
    if rank == 0:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((addr, port))
        sock.listen()
        store = dist.TCPStore(addr, port, world_size, True, wait, master_listen_fd=sock.detach())
    else:
        store = dist.TCPStore(addr, port, world_size, False, wait)
    return original(backend, timeout=timeout, world_size=world_size, rank=rank, store=store,
                    **kwargs)


def _to_fp32(original: Any, param_dtype: str) -> Any:
    """OpenRLHF's `convert_to_torch_dtype` knows bf16/fp16 only: add fp32."""
    import torch

    return torch.float32 if param_dtype == "fp32" else original(param_dtype)


def _strategy_init(original: Any, self: Any, *args: Any, **kwargs: Any) -> None:
    """`--ds.param_dtype bf16` becomes fp32 (DeepSpeed's bf16 off; models load in fp32); the
    strategy carries its args to every Ray actor, so this runs in the driver."""
    original(self, *args, **kwargs)
    if self.param_dtype == "bf16":
        self.param_dtype = self.args.ds.param_dtype = "fp32"


def _sync_group(module: Any) -> None:
    """Both the definition and the name `ppo_actor` imported from it."""
    module.stateless_init_process_group = tcp_init_process_group


def install() -> bool:
    """Apply the CPU mode in this process (idempotent); False where CUDA is available."""
    global _installed
    if _installed:
        return True
    import torch
    import torch.distributed as dist

    if torch.cuda.is_available():
        logger.warning("bai: CUDA is available: --bai.cpu patches NOT applied in this process")
        return False
    for key, value in env_vars().items():
        os.environ.setdefault(key, value)
    clear_stale_build_locks(os.environ["TORCH_EXTENSIONS_DIR"])
    ensure_shim_path()
    _patch_torch_cuda()
    wrap(dist, "init_process_group", _init_process_group)
    patches: list[tuple[str, Callable[[Any], None]]] = [
        ("openrlhf.utils.deepspeed.deepspeed",
         lambda m: wrap(m, "init_device_mesh", _device_mesh)),
        ("openrlhf.trainer.ppo_utils.replay_buffer",
         lambda m: wrap(m.NaiveReplayBuffer, "__init__", _replay_buffer_init)),
        ("openrlhf.utils.distributed_util", _sync_group),
        ("openrlhf.trainer.ray.ppo_actor", _sync_group),
        ("vllm", lambda m: wrap(m, "AsyncEngineArgs", _engine_args)),
    ]
    if train_dtype() == "fp32":
        patches += [
            ("openrlhf.utils.utils", lambda m: wrap(m, "convert_to_torch_dtype", _to_fp32)),
            ("openrlhf.utils.deepspeed.deepspeed",
             lambda m: wrap(m.DeepspeedStrategy, "__init__", _strategy_init)),
        ]
    for name, patch in patches:
        when_imported(name, patch)
    _installed = True
    return True
