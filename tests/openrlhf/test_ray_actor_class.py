"""The hooks reach the class Ray actually runs (`PPOTrainer.__ray_metadata__.modified_class`).

`@ray.remote class PPOTrainer(BasePPOTrainer)` copies every inherited method into Ray's actor
class while `ppo_trainer.py` executes, and that class is shipped to the worker by value. These
tests ship it exactly as Ray does (cloudpickle) into a fresh process that, like a Ray worker,
ran our setup hook first, and call the shipped `_compute_rollout_stats` there: the `bai/` keys
must come back. (Before the fix, the shipped class carried OpenRLHF's unpatched method by value,
so the worker's hook never ran.)
"""

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("openrlhf")
pytest.importorskip("ray")

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
SHIMS = os.path.join(REPO, "openrlhf_patches", "cpu_shims")
METHODS = ["_compute_rollout_stats", "train_step", "save_logs_and_checkpoints",
           "restore_best_checkpoint_state"]

SHIP = r"""
import sys, json
sys.path.append({shims!r})
from openrlhf_patches.activate import arm
assert arm()
import openrlhf.trainer.ppo_trainer as m
import ray.cloudpickle as cp
cls = m.PPOTrainer.__ray_metadata__.modified_class
chains = {{}}
for name in {methods!r}:
    f, chain = cls.__dict__.get(name), []
    while f is not None:
        code = getattr(f, "__code__", None)  # functools.wraps copies names, not code
        chain.append(code.co_filename.replace("\\", "/") if code else None)
        f = getattr(f, "__wrapped__", None)
    chains[name] = chain
open({blob!r}, "wb").write(cp.dumps(cls))
print(json.dumps(chains))
"""

RUN_SHIPPED = r"""
import sys, json, os
sys.path.append({shims!r})
sys.path.insert(0, {here!r})
import torch
import openrlhf  # in a Ray worker, bai.pth arms the hooks when openrlhf loads
import ray.cloudpickle as cp
cls = cp.loads(open({blob!r}, "rb").read())
from test_hooks import batch
from types import SimpleNamespace
trainer = object.__new__(cls)
trainer.args = SimpleNamespace(rollout=SimpleNamespace(n_samples_per_prompt=1),
                               ckpt=SimpleNamespace(output_dir={out!r}))
trainer.tokenizer = None
stats = cls._compute_rollout_stats(trainer, batch())
print(json.dumps(sorted(k for k in stats if k.startswith("bai/"))))
"""


def _python(code: str, **env: str) -> str:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300, cwd=REPO, env=dict(os.environ, **env))
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def shipped(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ray_class")
    blob = str(tmp / "ppo_trainer_class.pkl")
    chains = json.loads(_python(SHIP.format(shims=SHIMS, methods=METHODS, blob=blob)))
    return tmp, blob, chains


def test_ray_actor_class_methods_wrap_the_bai_hooks(shipped):
    _, _, chains = shipped
    for name in METHODS:
        # Ray's tracing wrapper -> our hook -> OpenRLHF's original
        assert any(f and f.endswith("openrlhf_patches/hooks.py") for f in chains[name]), (
            name, chains[name])


def test_shipped_actor_class_computes_bai_metrics_in_a_worker(shipped):
    tmp, blob, _ = shipped
    keys = json.loads(_python(
        RUN_SHIPPED.format(shims=SHIMS, here=HERE, blob=blob, out=str(tmp / "out"))))
    assert "bai/response_length/mean" in keys and "bai/detector/length_collapse" in keys
    rows = (tmp / "out" / "bai_metrics.jsonl").read_text().splitlines()
    assert len(rows) == 1


TWICE = r"""
import sys, json
sys.path.append({shims!r})
sys.path.insert(0, {here!r})
import openrlhf  # bai.pth's route: armed on import
from openrlhf_patches import activate
assert activate.arm() and activate.arm()  # bai-train's route, called again on top
import openrlhf.trainer.ppo_trainer as m
from types import SimpleNamespace
from test_hooks import batch

def ours(f):
    n = 0
    while f is not None:
        code = getattr(f, "__code__", None)
        path = code.co_filename.replace("\\", "/") if code else ""
        n += path.endswith("openrlhf_patches/hooks.py")
        f = getattr(f, "__wrapped__", None)
    return n

cls = m.PPOTrainer.__ray_metadata__.modified_class
counts = {{name: [ours(m.BasePPOTrainer.__dict__[name]), ours(getattr(cls, name))]
          for name in {methods!r}}}
trainer = object.__new__(m.BasePPOTrainer)
trainer.args = SimpleNamespace(rollout=SimpleNamespace(n_samples_per_prompt=1),
                               ckpt=SimpleNamespace(output_dir={out!r}))
trainer.tokenizer = None
stats = trainer._compute_rollout_stats(batch())
print(json.dumps({{"counts": counts, "bai": sum(k.startswith("bai/") for k in stats)}}))
"""


def test_both_routes_armed_install_the_hooks_once(tmp_path):
    """bai-train's arm() on top of the bai.pth import hook: every method wrapped once, one
    JSONL row per step."""
    out = json.loads(_python(TWICE.format(shims=SHIMS, here=HERE, methods=METHODS,
                                          out=str(tmp_path))))
    assert out["counts"] == {name: [1, 1] for name in METHODS}
    assert out["bai"] > 10
    assert len((tmp_path / "bai_metrics.jsonl").read_text().splitlines()) == 1
