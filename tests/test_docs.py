"""README.md fits on a page; the links and `.py` files named in README.md and docs/ exist."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
MAX_README_LINES = 250

# Bare file names of other projects that the docs name; they are not files of this repository.
OTHER_PROJECT_FILES = {
    "linear.py",  # mergekit: mergekit/merge_methods/linear.py
    "callbacks.py",  # TRL: trl/trainer/callbacks.py
    "train_ppo_ray.py",  # OpenRLHF: openrlhf/cli/train_ppo_ray.py
    "ppo_trainer.py",  # OpenRLHF: openrlhf/trainer/ppo_trainer.py
}
# Package folders of other projects (and their sub-folders as the docs quote them): a path
# starting with one of these names another project's file, e.g. `openrlhf/models/model.py`,
# `merge_methods/linear.py`, `trainer/ppo_trainer.py`. Checked only when the path is not ours.
OTHER_PROJECT_PREFIXES = (
    "openrlhf/",
    "mergekit/",
    "trl/",
    "vllm/",
    "ray/",
    "transformers/",
    "merge_methods/",
    "trainer/",
    "utils/",
    "cli/",
    "models/",
    "examples/",
)

_FENCE = re.compile(r"^\s*(```|~~~)")
_CODE_SPAN = re.compile(r"(`+)(.+?)(?<!`)\1(?!`)", re.DOTALL)
_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_PY_TOKEN = re.compile(r"(?<![\w./~$<>-])([\w./~$<>-]*\w\.py)(?!\w|\.\w)")


def markdown_files() -> list[Path]:
    """README.md and every markdown page under docs/."""
    return [README, *sorted((ROOT / "docs").rglob("*.md"))]


def _strip_fences(text: str) -> str:
    kept, inside = [], False
    for line in text.splitlines():
        if _FENCE.match(line):
            inside = not inside
            continue
        if not inside:
            kept.append(line)
    return "\n".join(kept)


def link_targets(text: str) -> list[str]:
    """Relative link targets (`[x](path)`, `![x](path)`) outside code, anchors stripped."""
    prose = _CODE_SPAN.sub("", _strip_fences(text))
    targets = []
    for match in _LINK.finditer(prose):
        target = match.group(1)
        if re.match(r"(https?|mailto):", target):
            continue
        target = target.split("#", 1)[0]
        if target:
            targets.append(target)
    return targets


def py_tokens(text: str) -> list[str]:
    """Path-like tokens ending in `.py` inside inline code spans."""
    tokens = []
    for span in _CODE_SPAN.finditer(_strip_fences(text)):
        for match in _PY_TOKEN.finditer(span.group(2)):
            token = match.group(1)
            # placeholders and absolute paths (`$F/x.py`, `~/x.py`, `/tmp/x.py`, `<dir>/x.py`)
            if token.startswith("/") or re.search(r"[<>$~]", token):
                continue
            tokens.append(token)
    return tokens


def _repo_py_names() -> set[str]:
    names = set()
    for _folder, dirs, files in os.walk(ROOT):
        dirs[:] = [d for d in dirs if not d.startswith(".") and d != "__pycache__"]
        names.update(f for f in files if f.endswith(".py"))
    return names


def missing_py_files(md: Path, tokens: list[str], repo_names: set[str]) -> list[str]:
    """The tokens that name no file: ours (repo root or the page's folder) or another project's."""
    missing = []
    for token in tokens:
        if "/" in token:
            if (ROOT / token).is_file() or (md.parent / token).is_file():
                continue
            if token.startswith(OTHER_PROJECT_PREFIXES):
                continue
        elif token in repo_names or token in OTHER_PROJECT_FILES:
            continue
        missing.append(token)
    return missing


def _name(md: Path) -> str:
    return str(md.relative_to(ROOT))


def test_readme_fits_on_a_page() -> None:
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= MAX_README_LINES, f"README.md has {len(lines)} lines"


@pytest.mark.parametrize("md", markdown_files(), ids=_name)
def test_relative_links_exist(md: Path) -> None:
    targets = link_targets(md.read_text(encoding="utf-8"))
    broken = [t for t in targets if not (md.parent / t).exists()]
    assert not broken, f"{_name(md)}: broken links {broken}"


@pytest.mark.parametrize("md", markdown_files(), ids=_name)
def test_named_py_files_exist(md: Path) -> None:
    tokens = py_tokens(md.read_text(encoding="utf-8"))
    missing = missing_py_files(md, tokens, _repo_py_names())
    assert not missing, f"{_name(md)}: named .py files that do not exist {missing}"


def test_checker_finds_broken_links_and_files(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    text = (
        "[ok](page.md#top) [gone](nope.md) ![img](pics/x.png) [web](https://x.org/a.md)\n"
        "`[not a link](inside-code.md)` and `bai_core/nope.py`, `nope_here.py`,\n"
        "`bai_core/merge_math.py: fold`, `linear.py`, `openrlhf/models/model.py`, `$F/x.py`\n"
        "```bash\n[fenced](fenced.md) `fenced.py`\n```\n"
    )
    page.write_text(text, encoding="utf-8")
    assert link_targets(text) == ["page.md", "nope.md", "pics/x.png"]
    broken = [t for t in link_targets(text) if not (page.parent / t).exists()]
    assert broken == ["nope.md", "pics/x.png"]
    tokens = py_tokens(text)
    assert tokens == [
        "bai_core/nope.py",
        "nope_here.py",
        "bai_core/merge_math.py",
        "linear.py",
        "openrlhf/models/model.py",
    ]
    assert missing_py_files(page, tokens, _repo_py_names()) == ["bai_core/nope.py", "nope_here.py"]
