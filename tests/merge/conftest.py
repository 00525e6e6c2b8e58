"""Fixtures for the merge tests: tiny offline model families and a mergekit-yaml runner."""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import forkcli
import pytest
import torch
import yaml
from safetensors.torch import load_file

from bai_demo.toy_models import TinySpec, write_tiny_family

BIN = Path(sys.executable).parent
# The working tree first: the .pth hook file is copied into site-packages at install time.
REPO = Path(__file__).resolve().parents[2]
SPEC = TinySpec(num_hidden_layers=3)


@pytest.fixture(scope="session")
def family(tmp_path_factory) -> dict[str, Path]:
    """fp32 base / instruct / reasoning with 3 layers (the reasoning one has a 4x context)."""
    return write_tiny_family(tmp_path_factory.mktemp("fam32"), spec=SPEC, seed=1)


@pytest.fixture(scope="session")
def family_bf16(tmp_path_factory) -> dict[str, Path]:
    return write_tiny_family(
        tmp_path_factory.mktemp("fam16"), spec=SPEC, seed=2, dtype=torch.bfloat16
    )


def bai_config(fam: dict[str, Path], **overrides) -> dict:
    """The paper's two-SFT bai recipe over a tiny family, as a YAML-ready dict."""
    cfg = {
        "merge_method": "bai",
        "base_model": str(fam["base"]),
        "models": [
            {"model": str(fam["instruct"]), "parameters": {"weight": 0.5}},
            {"model": str(fam["reasoning"]), "parameters": {"weight": 0.5}},
        ],
        "parameters": {"base_weight": 0.5},
        "dtype": "float32",
    }
    cfg.update(overrides)
    return cfg


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str


CLI_ENV = dict(os.environ, PYTHONWARNINGS="ignore", TRANSFORMERS_VERBOSITY="error",
               HF_HUB_OFFLINE="1",
               PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
CLI_ENV.pop("BAI_TRACEBACK", None)


def run_cli(args: list[str], cwd: Path | None = None) -> Run:
    """Run a console script of this venv in a process of its own, as a user would (a forked
    child of a process that imported the tool once: tests/forkcli.py)."""
    proc = forkcli.run([str(BIN / args[0]), *args[1:]], cwd=cwd, env=CLI_ENV)
    return Run(proc.returncode, proc.stdout, proc.stderr)


def mergekit_yaml(cfg: dict | str, out: Path, *extra: str) -> Run:
    """`mergekit-yaml CONFIG OUT` with the config written next to the output."""
    out.parent.mkdir(parents=True, exist_ok=True)
    path = out.parent / f"{out.name}.yaml"
    path.write_text(cfg if isinstance(cfg, str) else yaml.safe_dump(cfg, sort_keys=False))
    return run_cli(["mergekit-yaml", str(path), str(out), "--quiet", *extra])


def load_model(path: Path) -> dict[str, torch.Tensor]:
    tensors: dict[str, torch.Tensor] = {}
    for shard in sorted(path.glob("*.safetensors")):
        tensors.update(load_file(shard))
    return tensors


def leftovers(parent: Path) -> list[str]:
    """Names of hidden partial directories a failed merge might have left behind."""
    return [p.name for p in parent.iterdir() if ".partial-" in p.name]


@pytest.fixture
def scratch(tmp_path) -> Path:
    yield tmp_path
    shutil.rmtree(tmp_path, ignore_errors=True)
