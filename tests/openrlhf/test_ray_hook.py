"""Installed bai patches the OpenRLHF trainer in Ray workers on import (real Ray, no setup hook)."""

import os

import pytest

ray = pytest.importorskip("ray")
pytest.importorskip("openrlhf")

from bai_core.config import BaiConfig  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
SHIMS = os.path.join(REPO, "openrlhf_patches", "cpu_shims")


def test_installed_bai_patches_the_trainer_in_ray_workers():
    import flash_attn

    if ray.is_initialized():
        pytest.skip("Ray already initialized in this process")
    env = {"env_vars": BaiConfig(collapse_drop=0.42).to_env()}
    shim = "bai-test-shim" in getattr(flash_attn, "__version__", "")
    env["env_vars"]["PYTHONPATH"] = os.pathsep.join([SHIMS, REPO] if shim else [REPO])
    ray.init(address="local", num_cpus=1, include_dashboard=False, runtime_env=env,
             log_to_driver=False, _node_ip_address="127.0.0.1")  # a new head, loopback only
    try:
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
    assert before is False  # the import hook armed a post-import patch, it imported nothing
    assert patched is True
    assert cfg.collapse_drop == 0.42
