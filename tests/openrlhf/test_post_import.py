"""The post-import hook: runs callbacks after a module executes, and survives delegating finders."""

import os
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
SHIMS = os.path.join(REPO, "openrlhf_patches", "cpu_shims")

DELEGATING_FINDER = r"""
import sys
class Delegating:
    # hands every name to every other finder, without a re-entrancy guard (as ours once did)
    def find_spec(self, fullname, path, target=None):
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                return spec
        return None
"""


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300, cwd=REPO)


def test_callback_runs_after_the_module_body():
    out = _run(
        "from bai_autoload import when_imported\n"
        "seen = []\n"
        "when_imported('colorsys', lambda m: seen.append(m.rgb_to_hsv(1, 0, 0)))\n"
        "assert seen == []\n"
        "import colorsys\n"
        "when_imported('colorsys', lambda m: seen.append('now'))\n"
        "print(seen)\n")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[(0.0, 1.0, 1), 'now']"


def test_a_failing_callback_does_not_break_the_import():
    out = _run(
        "from bai_autoload import when_imported\n"
        "when_imported('colorsys', lambda m: 1 / 0)\n"
        "import colorsys\n"
        "print(colorsys.rgb_to_hsv(0, 0, 0))\n")
    assert out.returncode == 0, out.stderr
    assert "post-import hook of colorsys failed" in out.stderr


@pytest.mark.parametrize("order", ["delegating-first", "ours-first"])
def test_delegating_finder_does_not_recurse(order):
    first = ("sys.meta_path.insert(0, Delegating())\n", "")
    if order == "ours-first":
        first = first[::-1]
    out = _run(
        DELEGATING_FINDER
        + first[0]
        + "from bai_autoload import when_imported\n"
        + "hit = []\n"
        + "when_imported('colorsys', lambda m: hit.append(m.__name__))\n"
        + first[1]
        + "import colorsys\n"
        + "print(hit)\n")
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "['colorsys']"


def test_bai_hooks_patch_openrlhf_under_a_delegating_finder():
    pytest.importorskip("openrlhf")
    out = _run(
        DELEGATING_FINDER
        + f"sys.path.append({SHIMS!r})\n"
        + "sys.meta_path.insert(0, Delegating())\n"
        + "from openrlhf_patches.activate import arm\n"
        + "assert arm()\n"
        + "import openrlhf.trainer.ppo_trainer as m\n"
        + "print(m.BasePPOTrainer.__dict__.get('_bai_patched'))\n")
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "True"
