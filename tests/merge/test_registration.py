"""The .pth import hook: `bai` appears wherever mergekit is imported, and costs nothing else."""

import os
import subprocess
import sys

from conftest import REPO


def python(code: str) -> str:
    """Run code in a fresh interpreter that loads the working tree's hook via the .pth file."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH",
                                                                                  "")]))
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    ).stdout.strip()


def test_plain_python_loads_only_the_tiny_hook():
    out = python(
        "import sys; print(sorted(m for m in ('bai_autoload', 'bai_mergekit', "
        "'mergekit', 'torch') if m in sys.modules))"
    )
    assert out == "['bai_autoload']"


def test_mergekit_sees_bai_without_importing_our_package():
    out = python("import mergekit.merge_methods as m; print(m.get('bai').spec.pretty_name)")
    assert out == "Balanced Actor Initialization (BAI)"


def test_run_merge_is_wrapped_for_stock_scripts():
    out = python(
        "from mergekit.scripts import run_yaml, multimerge; import mergekit.merge as m; "
        "print(run_yaml.run_merge is m.run_merge, getattr(m.run_merge, '__bai_wrapped__', 0))"
    )
    assert out == "True True"


def test_importing_our_method_first_still_registers():
    out = python(
        "import bai_mergekit.method; from mergekit.merge_methods import registry; "
        "print(sum(x.spec.name == 'bai' for x in registry.registered_methods()))"
    )
    assert out == "1"


DELEGATING_FINDER = """
import sys

class Delegating:  # like ours: answers by asking every other finder on sys.meta_path
    def find_spec(self, name, path, target=None):
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                return spec
        return None

sys.meta_path.insert(0, Delegating())
import mergekit.merge
import mergekit.merge_methods as m
print(m.get("bai").spec.name, getattr(mergekit.merge.run_merge, "__bai_wrapped__", False))
"""


def test_a_delegating_finder_does_not_recurse_forever():
    """Before the re-entrancy guard this died with RecursionError."""
    assert python(DELEGATING_FINDER) == "bai True"


def test_stock_run_yaml_command_is_guarded():
    out = python("from mergekit.scripts import run_yaml; "
                 "print(getattr(run_yaml.main.callback, '__bai_wrapped__', False))")
    assert out == "True"
