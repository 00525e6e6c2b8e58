"""The .pth import hook: `bai` appears wherever mergekit is imported, and costs nothing else."""

import subprocess
import sys


def python(code: str) -> str:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()


def test_plain_python_loads_only_the_tiny_hook():
    out = python(
        "import sys; print(sorted(m for m in ('bai_mergekit_autoload', 'bai_mergekit', "
        "'mergekit', 'torch') if m in sys.modules))"
    )
    assert out == "['bai_mergekit_autoload']"


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
