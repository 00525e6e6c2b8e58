"""The layout rule: the core imports no framework, and no adapter imports another adapter."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FRAMEWORKS = {"mergekit", "openrlhf", "ray", "vllm", "trl", "deepspeed"}
ADAPTERS = {"bai_mergekit", "openrlhf_patches", "bai_trl"}
UPPER = {"bai_tools", "bai_demo"}  # tools sit on top: the core and adapters never import them


def imported_roots(path: Path) -> set[str]:
    """Top-level package names imported anywhere in a module (lazy imports included)."""
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


def modules(package: str) -> list[Path]:
    return sorted((REPO / package).rglob("*.py"))


@pytest.mark.parametrize("path", modules("bai_core"), ids=lambda p: p.name)
def test_core_imports_no_framework_and_nothing_above_it(path):
    bad = imported_roots(path) & (FRAMEWORKS | ADAPTERS | UPPER)
    assert not bad, f"{path.relative_to(REPO)} imports {sorted(bad)}"


@pytest.mark.parametrize("adapter", sorted(ADAPTERS))
def test_adapters_import_the_core_not_each_other_nor_the_tools(adapter):
    assert modules(adapter), f"{adapter} has no modules"
    for path in modules(adapter):
        bad = imported_roots(path) & ((ADAPTERS - {adapter}) | UPPER)
        assert not bad, f"{path.relative_to(REPO)} imports {sorted(bad)}"


def test_the_checker_sees_lazy_imports(tmp_path):
    probe = tmp_path / "m.py"
    probe.write_text("def f():\n    from openrlhf.trainer import x\n    import ray.util\n")
    assert imported_roots(probe) == {"openrlhf", "ray"}
