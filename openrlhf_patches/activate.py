"""The one way the BAI hooks enter an OpenRLHF process: `arm()`, idempotent.

`bai.pth` (bai_autoload) calls `on_openrlhf` right after the `openrlhf` package loads, in any
process of an environment with bai installed: a stock `python -m openrlhf.cli.train_ppo_ray`
driver, a `ray job submit` entrypoint, every Ray worker on every node, vLLM's engine processes.
`on_openrlhf` only registers import callbacks (cheap: `import openrlhf` stays light); the
configuration is read when OpenRLHF imports Ray or its trainer, or when `bai-train` calls
`arm()` (harmless when the import hook already registered). Armed, a process:
- patches OpenRLHF's trainer classes as soon as their modules load (`hooks.patch_module`);
- restores the normalization buffers of loaded reward models and critics (`value_buffers`,
  a loading fix that BAI_DISABLE=1 leaves on);
- in the driver, adds the resolved BAI_* settings to the runtime_env of OpenRLHF's own
  `ray.init`, so every Ray worker sees the same configuration, and logs one INFO line.
Configuration comes from BAI_* variables and BAI_CONFIG (bai_core.config); a bad value is one
ERROR line and the hooks stay off: training runs on unchanged. BAI_DISABLE=1 turns all off.
"""

from __future__ import annotations

import os
import sys

from bai_autoload import when_imported

from . import SUPPORTED_OPENRLHF

TYPE_CHECKING = False  # not `typing`'s: importing typing alone costs `import openrlhf` ~10 ms
if TYPE_CHECKING:
    from typing import Any

__all__ = ["CPU_ENV", "SMOKE_ENV", "arm", "cpu_requested", "on_openrlhf", "wrap", "node_id"]

CPU_ENV = "BAI_CPU"  # internal: "1" only from bai-train --bai.cpu or our ray.init's runtime_env
SMOKE_ENV = "BAI_CPU_SMOKE_TEST"  # public opt-in: a stock launch in the CPU smoke-test mode
TARGET_MODULES = ("openrlhf.trainer.ppo_trainer", "openrlhf.trainer.ppo_trainer_async")
LOOPBACK = "127.0.0.1"
_state: dict[str, Any] = {"armed": False, "resolved": False, "active": False, "config": None}


def _logger() -> Any:
    import logging

    return logging.getLogger("bai")


def on_openrlhf(module: Any = None) -> None:
    """bai_autoload's callback for the `openrlhf` package: register, read nothing yet."""
    try:
        _register()
    except Exception as exc:  # never break OpenRLHF's import
        _logger().warning("bai: hooks not installed: %r", exc)


def _register() -> None:
    """The CPU mode when asked for (idempotent), and once per process the import callbacks."""
    if cpu_requested():
        from .cpu_mode import install as install_cpu_mode

        os.environ[CPU_ENV] = "1"
        install_cpu_mode()
    if _state["armed"]:
        return
    _state["armed"] = True
    from .value_buffers import MODULES, patch

    for name in MODULES:  # a loading fix, not a metric hook: on with BAI_DISABLE=1 too
        when_imported(name, patch)
    when_imported("ray", lambda ray: wrap(ray, "init", _ray_init))
    for name in TARGET_MODULES:
        when_imported(name, _patch_module)


def cpu_requested() -> bool:
    return os.environ.get(CPU_ENV) == "1" or os.environ.get(SMOKE_ENV) == "1"


def ensure_log_handler() -> None:
    """Ray workers have no logging config: give the "bai" logger its own stderr handler."""
    import logging

    logger = _logger()
    if not logger.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("[bai] %(levelname)s %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False


def openrlhf_version() -> str | None:
    """The installed OpenRLHF's version (its dist-info folder name: `importlib.metadata` alone
    costs tens of milliseconds of start-up)."""
    import importlib.util

    spec = importlib.util.find_spec("openrlhf")
    if spec is not None and spec.submodule_search_locations:
        site = os.path.dirname(list(spec.submodule_search_locations)[0])
        try:
            for name in os.listdir(site):
                if name.startswith("openrlhf-") and name.endswith(".dist-info"):
                    return name[len("openrlhf-"):-len(".dist-info")]
        except OSError:
            pass
    import importlib.metadata

    try:
        return importlib.metadata.version("openrlhf")
    except importlib.metadata.PackageNotFoundError:
        return None


def arm() -> bool:
    """Register the hooks and read the configuration now; True when they will patch OpenRLHF.
    Never raises. `bai-train` calls it after setting the configuration."""
    _state["resolved"] = False
    on_openrlhf()
    return _resolve()


def _resolve() -> bool:
    """Read the configuration and the version once per arm(); log a bad value once."""
    if _state["resolved"]:
        return _state["active"]
    _state.update(resolved=True, active=False, config=None)
    try:
        ensure_log_handler()
        if os.environ.get("BAI_DISABLE", "").strip().lower() in ("1", "true", "yes", "on"):
            return False
        from bai_core.config import BaiConfig

        try:
            config = BaiConfig.from_env()
            config.validate("env")
        except ValueError as exc:
            _logger().error("bai: %s; the bai hooks are OFF, training runs on unchanged", exc)
            return False
        if config.disable:
            return False
        version = openrlhf_version()
        if version != SUPPORTED_OPENRLHF:
            _logger().warning("bai: OpenRLHF %s is installed but the bai hooks support %s "
                              "exactly: no bai metrics or detectors in this run", version,
                              SUPPORTED_OPENRLHF)
            return False
        _state.update(config=config, active=True)
    except Exception as exc:  # never break OpenRLHF
        _logger().warning("bai: hooks not installed: %r", exc)
    return _state["active"]


def _patch_module(module: Any) -> None:
    if not _resolve():
        return
    from .hooks import patch_module  # torch and the core load only with OpenRLHF's trainer

    patch_module(module)


def worker_env() -> dict[str, str]:
    """What the driver hands every Ray worker: the resolved config (or BAI_DISABLE=1 when it
    is invalid or off), and the CPU mode's variables (BAI_CPU=0 overrides a leaked one)."""
    config = _state["config"]
    env = config.to_env() if config is not None and _state["active"] else {"BAI_DISABLE": "1"}
    env.update({k: v for k, v in os.environ.items() if k.startswith("BAI_TEXT_RM")})
    env[CPU_ENV] = "1" if cpu_requested() else "0"
    if cpu_requested():
        from .cpu_mode import env_vars

        env.update(env_vars())
    return env


def init_kwargs(kwargs: dict[str, Any], argv: list[str]) -> dict[str, Any]:
    """OpenRLHF's ray.init kwargs with our runtime_env added; for a new local cluster in CPU
    mode also its logical GPUs and a loopback-only node."""
    from .argv import ray_resources

    _resolve()
    kwargs = dict(kwargs)
    runtime_env = dict(kwargs.get("runtime_env") or {})
    # under `ray job submit` the job's env vars already reach every worker, and Ray refuses a
    # ray.init that names one of them again: add only the others
    job = _job_env_vars()
    ours = {k: v for k, v in worker_env().items() if k not in job}
    runtime_env["env_vars"] = {**ours, **(runtime_env.get("env_vars") or {})}
    kwargs["runtime_env"] = runtime_env
    joining = kwargs.get("address") not in (None, "local") or os.environ.get("RAY_ADDRESS")
    if cpu_requested() and not joining:
        import ray._private.ray_constants as ray_constants

        ray_constants.ENABLE_RAY_CLUSTER = False  # read once at `import ray`: see cpu_mode
        kwargs.setdefault("address", "local")
        kwargs.setdefault("include_dashboard", False)
        kwargs.setdefault("_node_ip_address", LOOPBACK)
        for key, value in ray_resources(argv).items():
            kwargs.setdefault(key, value)
    return kwargs


def _job_env_vars() -> dict[str, str]:
    """The env vars of the `ray job submit` runtime env this driver runs in ({} otherwise)."""
    import json

    raw = os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR")
    try:
        config = json.loads(raw) if raw else {}
        return dict((config.get("runtime_env") or {}).get("env_vars") or {})
    except (ValueError, AttributeError, TypeError):
        return {}


def wrap(owner: Any, name: str, wrapper: Any) -> None:
    """`owner.name` becomes `wrapper(original, *args, **kwargs)`, once per process."""
    import functools

    original = getattr(owner, name)
    if getattr(original, "_bai", False):
        return

    @functools.wraps(original)
    def patched(*args: Any, **kwargs: Any) -> Any:
        return wrapper(original, *args, **kwargs)

    patched._bai = True
    setattr(owner, name, patched)


def node_id() -> str | None:
    """This process's Ray node, without starting Ray where it is not running."""
    try:
        import ray

        return ray.get_runtime_context().get_node_id() if ray.is_initialized() else None
    except Exception:
        return None


def _ray_init(original: Any, *args: Any, **kwargs: Any) -> Any:
    """OpenRLHF's `ray.init` with our runtime_env; then one INFO line when the hooks are on."""
    jsonl = None
    try:
        argv = sys.argv[1:]
        kwargs = init_kwargs(kwargs, argv)
        if _state["active"]:
            from bai_core.constants import JSONL_NAME

            from .argv import flag_value

            jsonl = _state["config"].jsonl or os.path.join(
                flag_value(argv, "--ckpt.output_dir", "./ckpt"), JSONL_NAME)
    except Exception as exc:  # never break OpenRLHF's ray.init
        _logger().warning("bai: runtime_env not extended: %r", exc)
    context = original(*args, **kwargs)
    if jsonl:
        from .nodes import check_paths_on_nodes

        check_paths_on_nodes(sys.modules["ray"], sys.argv[1:])
        _logger().info("bai: hooks active (bai metrics and detectors) -> %s, by the trainer "
                       "on this node (%s); BAI_DISABLE=1 turns them off", jsonl, node_id())
    return context
