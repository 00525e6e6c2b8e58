"""Hostile input through the real CLIs: one error line, non-zero exit, nothing changed.

mergekit-yaml is mergekit's click CLI (`Error: ...`); bai-sweep is ours (`bai-sweep: error: ...`).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import forkcli
import pytest
import yaml
from conftest import BIN, CLI_ENV, bai_config
from safetensors.torch import load_file, save_file

from bai_mergekit.output import write_marker


@dataclass
class Case:
    """One bad input: the recipe (YAML text or dict), where the output goes, what must be named."""

    id: str
    tool: str  # "mergekit-yaml" or "bai-sweep"
    recipe: Callable[[dict, Path], dict | str]
    needles: tuple[str, ...]
    out: Callable[[dict, Path], str] = lambda fam, d: str(d / "out")
    args: tuple[str, ...] = ()
    setup: Callable[[dict, Path], None] = lambda fam, d: None
    result: dict = field(default_factory=dict)


def cfg(**changes):
    """bai_config over the family with top-level keys replaced (None: removed)."""
    def build(fam, d):
        out = bai_config(fam)
        for key, value in changes.items():
            if value is None:
                out.pop(key, None)
            else:
                out[key] = value(fam, d) if callable(value) else value
        return out
    return build


def params(**changes):
    def build(fam, d):
        out = bai_config(fam)
        out["parameters"].update(changes)
        return out
    return build


def model(index: int, **entry):
    """Replace models[index] fields; `path=` is a callable giving the model path."""
    def build(fam, d):
        out = bai_config(fam)
        for key, value in entry.items():
            if key == "path":
                out["models"][index]["model"] = str(value(fam, d))
            else:
                out["models"][index][key] = value
        return out
    return build


def extra_model(path):
    def build(fam, d):
        out = bai_config(fam)
        out["models"].append({"model": str(path(fam, d)), "parameters": {"weight": 1.0}})
        return out
    return build


def weight(value):
    return model(1, parameters={"weight": value})


def text(body: str):
    return lambda fam, d: body


def user_folder(fam, d):
    (d / "out").mkdir()
    (d / "out" / "notes.txt").write_text("my notes")


def changed_merge(fam, d):
    (d / "out").mkdir()
    (d / "out" / "config.json").write_text("{}")
    write_marker(d / "out", "mergekit-yaml")
    (d / "out" / "my-eval.json").write_text("{}")


def symlink_to_base(fam, d):
    (d / "alias").symlink_to(fam["base"], target_is_directory=True)


PREFIX = {"mergekit-yaml": "Error: ", "bai-sweep": "bai-sweep: error: "}
BASE_AGAIN = "both base_model and in models"
# Recipe and output rules are shared by both tools (one parser, one output guard).
SHARED = [
    ("yaml-list", text("- merge_method: bai\n- models: []\n"), ("must be a mapping", "list")),
    ("yaml-scalar", text("bai\n"), ("must be a mapping", "'bai'")),
    ("yaml-empty", text(""), ("is empty",)),
    ("yaml-broken", text("merge_method: bai\nmodels: [\n  - {model: x\n"), ("not valid YAML",
                                                                          "line")),
    ("normalize-string", params(normalize="false"), ("normalize", "'false'")),
    ("base-weight-null", params(base_weight=None), ("base_weight", "None")),
    ("base-weight-typo", params(base_wieght=0.2), ("base_wieght", "base_weight")),
    ("model-param-typo", model(0, parameters={"wieght": 0.2}), ("wieght", "weight")),
    ("weight-string", weight("0.5"), ("weight of", "'0.5'")),
    ("base-also-listed-trailing-slash", extra_model(lambda f, d: f"{f['base']}/"), (BASE_AGAIN,)),
    ("base-also-listed-symlink", extra_model(lambda f, d: d / "alias"), (BASE_AGAIN, "alias")),
    ("same-model-twice", extra_model(lambda f, d: f["instruct"].parent / ".." /
                                     f["instruct"].parent.name / "instruct"),
     ("listed twice", "instruct")),
    ("models-empty", cfg(models=[]), ("at least one model", "[]")),
    ("slices", text("merge_method: bai\nbase_model: x\nslices:\n"), ("slices",)),
    ("unknown-dtype", cfg(dtype="float8"), ("float8", "bfloat16")),
    ("no-weights", model(0, path=lambda f, d: f["_bad"] / "no-weights"),
     ("no weights", "no-weights")),
    ("truncated-safetensors", model(0, path=lambda f, d: f["_bad"] / "truncated"),
     ("truncated", "model.safetensors")),
    ("missing-lm-head", model(1, path=lambda f, d: f["_bad"] / "no-lm-head"),
     ("no-lm-head", "lm_head.weight")),
    ("missing-local-path", model(0, path=lambda f, d: "./models/instruct"),
     ("model path not found", "models/instruct")),
    ("no-architectures", model(0, path=lambda f, d: f["_bad"] / "no-architectures"),
     ("no-architectures", "has no `architectures` key")),
    ("empty-architectures", model(1, path=lambda f, d: f["_bad"] / "empty-architectures"),
     ("empty-architectures", "has an empty `architectures` key")),
]
OUTPUTS = [
    ("out-is-cwd", lambda f, d: ".", ("current folder",)),
    ("out-is-input", lambda f, d: str(f["base"]), ("input model", "base")),
    ("out-holds-inputs", lambda f, d: str(f["base"].parent), ("contains the input model",)),
    ("out-inside-input", lambda f, d: str(f["reasoning"] / "sub"), ("lies inside",)),
    ("out-is-config", lambda f, d: str(d / "cfg.yaml"), ("is the", "cfg.yaml")),
]
MERGEKIT_ONLY = [
    Case("tokenizer-source-missing", "mergekit-yaml",
         cfg(tokenizer={"source": "./no-such-tokenizer"}), ("no-such-tokenizer",)),
    Case("out-user-folder", "mergekit-yaml", cfg(), ("not written by a bai merge", "notes.txt"),
         setup=user_folder),
    Case("out-changed-merge", "mergekit-yaml", cfg(), ("changed since", "my-eval.json"),
         setup=changed_merge),
    Case("config-missing", "mergekit-yaml", cfg(), ("cannot read config file", "nope.yaml"),
         args=("--config-override", "nope.yaml")),
]
SWEEP_ONLY = [
    Case("normalize-int", "bai-sweep", params(normalize=1), ("normalize", "1")),
    Case("weight-null", "bai-sweep", weight(None), ("weight of", "None")),
    Case("weight-bool", "bai-sweep", weight(True), ("weight of", "True")),
    Case("base-weight-string", "bai-sweep", params(base_weight="0.2"), ("base_weight", "'0.2'")),
    Case("top-level-typo", "bai-sweep", cfg(base_modle="x"), ("base_modle", "base_model")),
    Case("models-not-list", "bai-sweep", cfg(models="x"), ("models", "'x'")),
    Case("model-entry-string", "bai-sweep", cfg(models=["x"]), ("models[0]", "'x'")),
    Case("no-base-model", "bai-sweep", cfg(base_model=None), ("base_model",)),
    Case("gradient-base-weight", "bai-sweep", params(base_weight=[0.1, 0.9]),
         ("scalar ratios", "[0.1, 0.9]")),
    Case("bad-shard-size", "bai-sweep", cfg(), ("--out-shard-size", "'12Q'"),
         args=("--out-shard-size", "12Q")),
    Case("zero-shard-size", "bai-sweep", cfg(), ("--out-shard-size", "'0'"),
         args=("--out-shard-size", "0")),
    Case("bad-alpha-list", "bai-sweep", cfg(), ("--base-weight", "0.5,abc"),
         args=("--base-weight", "0.5,abc")),
    Case("alpha-out-of-range", "bai-sweep", cfg(), ("base_weight", "1.5"),
         args=("--base-weight", "0.5,1.5")),
    Case("weights-count", "bai-sweep", cfg(), ("needs 2 numbers", "1,2,3"),
         args=("--weights", "1,2,3")),
    Case("out-user-folder", "bai-sweep", cfg(), ("not an earlier bai-sweep output", "notes.txt"),
         setup=user_folder),
    Case("recipe-missing", "bai-sweep", cfg(), ("cannot read recipe", "nope.yaml"),
         args=("--recipe-override", "nope.yaml")),
]


# Each mergekit-yaml run pays ~6 s of imports (torch, peft): it gets the cases the issue
# reported against it; bai-sweep (same parser and output guard, fails before importing torch)
# gets them all.
SWEEP_CHEAPER = {"model-param-typo", "weight-string", "base-also-listed-symlink",
                 "out-inside-input", "out-is-config"}


def all_cases() -> list[Case]:
    cases = []
    for tool in ("mergekit-yaml", "bai-sweep"):
        for name, recipe, needles in SHARED:
            if tool == "mergekit-yaml" and name in SWEEP_CHEAPER:
                continue
            setup = symlink_to_base if "symlink" in name else (lambda f, d: None)
            cases.append(Case(name, tool, recipe, needles, setup=setup))
        for name, out, needles in OUTPUTS:
            if tool == "mergekit-yaml" and name in SWEEP_CHEAPER:
                continue
            cases.append(Case(name, tool, cfg(), needles, out=out))
    return cases + MERGEKIT_ONLY + SWEEP_ONLY


CASES = all_cases()


def snapshot(*roots: Path) -> dict[str, str]:
    """Every path under the roots with the sha256 of each file (dirs and links by kind)."""
    seen = {}
    for root in roots:
        for path in sorted([root, *root.rglob("*")]):
            if path.is_symlink():
                seen[str(path)] = "link:" + os.readlink(path)
            elif path.is_file():
                seen[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
            else:
                seen[str(path)] = "dir"
    return seen


@pytest.fixture(scope="module")
def bad_family(family, tmp_path_factory) -> dict[str, Path]:
    """The tiny family plus broken copies: no weights, truncated weights, no lm_head, a
    config.json without `architectures` and one with an empty list."""
    bad = tmp_path_factory.mktemp("bad-models")
    for name in ("no-weights", "truncated", "no-lm-head", "no-architectures",
                 "empty-architectures"):
        shutil.copytree(family["reasoning"], bad / name)
    for name, archs in (("no-architectures", None), ("empty-architectures", [])):
        config_path = bad / name / "config.json"
        config = json.loads(config_path.read_text())
        config.pop("architectures")
        if archs is not None:
            config["architectures"] = archs
        config_path.write_text(json.dumps(config))
    (bad / "no-weights" / "model.safetensors").unlink()
    weights = bad / "truncated" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    tensors = load_file(bad / "no-lm-head" / "model.safetensors")
    del tensors["lm_head.weight"]  # its config says tie_word_embeddings: false
    save_file(tensors, bad / "no-lm-head" / "model.safetensors", metadata={"format": "pt"})
    return {**family, "_bad": bad}


def _run(case: Case, fam: dict, root: Path) -> None:
    case_dir = root / f"{case.tool}-{case.id}"
    case_dir.mkdir()
    recipe = case.recipe(fam, case_dir)
    config = case_dir / "cfg.yaml"
    config.write_text(recipe if isinstance(recipe, str) else yaml.safe_dump(recipe))
    case.setup(fam, case_dir)
    args = list(case.args)
    if args[:1] in (["--config-override"], ["--recipe-override"]):
        config, args = case_dir / args[1], args[2:]
    argv = [str(BIN / case.tool), str(config), case.out(fam, case_dir), *args]
    if case.tool == "mergekit-yaml":
        argv.append("--quiet")
    watched = [fam["base"].parent, fam["_bad"], case_dir]
    before = snapshot(*watched)
    proc = forkcli.run(argv, cwd=case_dir, env=CLI_ENV, timeout=300)
    case.result.update(rc=proc.returncode, stderr=proc.stderr, changed=sorted(
        k for k, v in snapshot(*watched).items() ^ before.items()))


@pytest.fixture(scope="module")
def results(bad_family, tmp_path_factory) -> dict[str, Case]:
    """Run every case once, three at a time (each in a process of its own, as a user runs it:
    a forked child of a process that imported the tool once, tests/forkcli.py)."""
    root = tmp_path_factory.mktemp("hostile")
    with ThreadPoolExecutor(max_workers=3) as pool:
        list(pool.map(lambda c: _run(c, bad_family, root), CASES))
    return {f"{c.tool}:{c.id}": c for c in CASES}


def test_there_are_at_least_45_cases_over_both_tools():
    tools = [c.tool for c in CASES]
    assert len(CASES) >= 45 and tools.count("mergekit-yaml") >= 20 and tools.count(
        "bai-sweep") >= 35
    assert len({f"{c.tool}:{c.id}" for c in CASES}) == len(CASES)


@pytest.mark.parametrize("key", [f"{c.tool}:{c.id}" for c in CASES])
def test_refused_in_one_line_and_nothing_changed(results, key):
    case = results[key]
    res = case.result
    assert res["rc"] != 0, res["stderr"][-2000:]
    prefix = PREFIX[case.tool]
    lines = [line for line in res["stderr"].splitlines() if line.strip()]
    assert lines and lines[-1].startswith(prefix), res["stderr"][-2000:]
    assert "Traceback" not in res["stderr"], res["stderr"][-3000:]
    assert sum(line.startswith(prefix) for line in lines) == 1
    for needle in case.needles:
        assert needle in lines[-1], lines[-1]
    assert res["changed"] == [], f"changed by a refused run: {res['changed'][:5]}"
