"""Installed bai patches the OpenRLHF trainer in Ray workers on import (real Ray, no setup hook).

The head runs with BAI_RAY_OFFLINE=1 and its own network audit folder: its API server, which
probes the cloud metadata servers at start in stock Ray 2.55, must make no request outside
loopback.
"""

import os
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")
pytest.importorskip("openrlhf")

from sockets import audit_env, audit_findings, audit_folder, audited_commands  # noqa: E402

from bai_core.config import BaiConfig  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
SHIMS = os.path.join(REPO, "openrlhf_patches", "cpu_shims")


def _usage_stats_head_ran(timeout: float = 60.0) -> bool:
    """Whether Ray's API server got past its start-up usage-stats step (it logs this line)."""
    log = Path(ray._private.worker._global_node.get_logs_dir_path()) / "dashboard.log"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if log.is_file() and "Usage reporting is disabled" in log.read_text(errors="replace"):
            return True
        time.sleep(0.5)
    return False


def _init_head(**kwargs) -> None:
    """ray.init, once more if the raylet missed Ray's fixed 30 s start-up window: it does while
    the other xdist worker loads both cores (a two-node run beside it, measured 2026-12-08)."""
    try:
        ray.init(**kwargs)
    except Exception as exc:
        if "timed out during startup" not in str(exc):
            raise
        ray.shutdown()
        ray.init(**kwargs)


def test_installed_bai_patches_the_trainer_in_ray_workers(monkeypatch):
    import flash_attn

    if ray.is_initialized():
        pytest.skip("Ray already initialized in this process")
    env = {"env_vars": BaiConfig(collapse_drop=0.42).to_env()}
    shim = "bai-test-shim" in getattr(flash_attn, "__version__", "")
    env["env_vars"]["PYTHONPATH"] = os.pathsep.join([SHIMS, REPO] if shim else [REPO])
    audit = audit_folder("ray-hook")
    # what the head's own processes (GCS, API server, agents) inherit from this process; Ray's
    # cluster mode off, so node IP 127.0.0.1 stays loopback (as the CPU mode does)
    head_env = audit_env({"BAI_RAY_OFFLINE": "1", "RAY_USAGE_STATS_ENABLED": "0",
                          "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
                          "PYTHONPATH": os.environ.get("PYTHONPATH", "")}, audit)
    for key, value in head_env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(ray._private.ray_constants, "ENABLE_RAY_CLUSTER", False)
    _init_head(address="local", num_cpus=1, include_dashboard=False, runtime_env=env,
               log_to_driver=False, _node_ip_address="127.0.0.1")  # a new head, loopback only
    try:
        assert _usage_stats_head_ran(), "Ray's API server did not reach its usage-stats step"

        @ray.remote
        def probe():
            import sys

            before = "openrlhf.trainer.ppo_trainer" in sys.modules
            import openrlhf.trainer.ppo_trainer as m

            from bai_core.config import BaiConfig as Cfg

            return before, m.BasePPOTrainer.__dict__.get("_bai_patched"), Cfg.from_env()

        before, patched, cfg = ray.get(probe.remote(), timeout=240)
    finally:
        ray.shutdown()
    assert any("ray/dashboard/dashboard.py" in c for c in audited_commands(audit))
    found = audit_findings(audit)
    assert found == [], "\n".join(found)
    assert before is False  # the import hook armed a post-import patch, it imported nothing
    assert patched is True
    assert cfg.collapse_drop == 0.42
