"""Outputs: signals clean up, stale partials go, a full disk is one line, old merges replaced."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
import torch
import yaml
from conftest import BIN, REPO, bai_config, leftovers, load_model
from mergekit.config import MergeConfiguration
from mergekit.merge import run_merge
from mergekit.options import MergeOptions

from bai_core.merge_math import BaiMergeError
from bai_demo.toy_models import TinySpec, write_tiny_family
from bai_mergekit.output import MARKER, OWNER
from bai_mergekit.sweep import run_sweep

ENV = dict(os.environ, PYTHONWARNINGS="ignore", TRANSFORMERS_VERBOSITY="error",
           HF_HUB_OFFLINE="1", PYTHONPATH=os.pathsep.join([str(REPO),
                                                           os.environ.get("PYTHONPATH", "")]))


def merge(cfg: dict, out: Path) -> None:
    run_merge(MergeConfiguration.model_validate(cfg), str(out), options=MergeOptions(quiet=True))


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def partial(parent: Path, name: str, owner: dict | None) -> Path:
    parent.mkdir(parents=True, exist_ok=True)
    path = parent / f".{name}.partial-{len(list(parent.iterdir()))}x"
    path.mkdir(parents=True)
    (path / "model.safetensors").write_bytes(b"half-written")
    if owner is not None:
        (path / OWNER).write_text(json.dumps(owner))
    return path


def test_earlier_merge_output_is_replaced_and_marked(family, tmp_path):
    out = tmp_path / "actor"
    merge(bai_config(family), out)
    marker = json.loads((out / MARKER).read_text())
    assert "model.safetensors" in marker["files"]
    first = load_model(out)["model.norm.weight"]
    cfg = bai_config(family)
    cfg["parameters"]["base_weight"] = 1.0
    merge(cfg, out)
    second = load_model(out)["model.norm.weight"]
    assert torch.equal(second, load_model(family["base"])["model.norm.weight"])
    assert not torch.equal(first, second)
    assert leftovers(tmp_path) == []


def test_stale_partials_of_dead_writers_are_removed(family, tmp_path, caplog):
    host = socket.gethostname()
    dead = partial(tmp_path, "actor", {"pid": dead_pid(), "host": host})
    ownerless = partial(tmp_path, "actor", None)  # killed before it wrote its owner file
    foreign = partial(tmp_path, "actor", {"pid": 1, "host": "elsewhere"})
    with caplog.at_level(logging.WARNING, logger="bai_mergekit.output"):
        merge(bai_config(family), tmp_path / "actor")
    assert not dead.exists() and not ownerless.exists()
    assert foreign.exists(), "a partial dir of another host is only reported"
    assert f"removed {dead}" in caplog.text and "elsewhere" in caplog.text
    assert (tmp_path / "actor" / "model.safetensors").is_file()


def test_partial_of_a_live_writer_is_refused_not_removed(family, tmp_path):
    writer = subprocess.Popen(["sleep", "60"])
    try:
        live = partial(tmp_path, "actor", {"pid": writer.pid, "host": socket.gethostname()})
        with pytest.raises(BaiMergeError, match=f"another merge \\(pid {writer.pid}\\)"):
            merge(bai_config(family), tmp_path / "actor")
        assert live.exists() and not (tmp_path / "actor").exists()
    finally:
        writer.kill()
        writer.wait()


def test_sweep_removes_stale_partials_of_its_candidates(family, tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(bai_config(family)))
    root = tmp_path / "sweep"
    stale = partial(root, "bai-a0.5-w0.5_0.5", {"pid": dead_pid(), "host": socket.gethostname()})
    run_sweep(recipe, root, [], [], quiet=True)  # a killed first run left only the partial
    assert not stale.exists() and (root / "bai-a0.5-w0.5_0.5" / MARKER).is_file()
    run_sweep(recipe, root, [0.5, 0.25], [], quiet=True)  # an earlier sweep root is reused
    assert (root / "bai-a0.25-w0.5_0.5" / MARKER).is_file()


@pytest.fixture(scope="module")
def slow_family(tmp_path_factory) -> dict[str, Path]:
    """~25 MB per model: a merge takes long enough to be interrupted mid-write."""
    spec = TinySpec(hidden_size=256, intermediate_size=1024, num_hidden_layers=6)
    return write_tiny_family(tmp_path_factory.mktemp("slow"), spec=spec, seed=3)


@pytest.mark.parametrize("tool,sig", [("bai-sweep", signal.SIGTERM),
                                      ("mergekit-yaml", signal.SIGTERM),
                                      ("mergekit-yaml", signal.SIGINT)])
def test_signal_mid_merge_cleans_up_like_a_failure(slow_family, tmp_path, tool, sig):
    config = tmp_path / "cfg.yaml"
    config.write_text(yaml.safe_dump(bai_config(slow_family)))
    out = tmp_path / "out"
    argv = [str(BIN / tool), str(config), str(out)]
    argv += ["--base-weight", ",".join(str(a / 10) for a in range(1, 10)), "--quiet"] if (
        tool == "bai-sweep") else ["--quiet"]
    proc = subprocess.Popen(argv, cwd=tmp_path, env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while not any(".partial-" in p.name for p in tmp_path.rglob("*")):
        assert proc.poll() is None, f"finished before its partial dir appeared: {proc.stderr}"
        assert time.monotonic() < deadline
        time.sleep(0.005)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    lines = [line for line in err.splitlines() if line.strip()]
    assert proc.returncode == 128 + sig, err[-2000:]
    prefix = "Error:" if tool == "mergekit-yaml" else f"{tool}: error:"
    name = signal.Signals(sig).name
    assert lines[-1] == f"{prefix} interrupted by {name}; partial output removed"
    assert "Traceback" not in err
    assert [p for p in tmp_path.rglob("*") if ".partial-" in p.name] == []
    assert not out.exists()


def test_full_disk_during_the_weight_write_is_one_line(family, tmp_path):
    mount = tmp_path / "small"
    mount.mkdir()
    try:
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)],
                       check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError) as error:
        pytest.skip(f"cannot mount a 1 MiB tmpfs here (needs root / CAP_SYS_ADMIN): {error}")
    try:
        config = tmp_path / "cfg.yaml"
        config.write_text(yaml.safe_dump(bai_config(family)))
        assert (family["base"] / "model.safetensors").stat().st_size > 1 << 20
        run = subprocess.run([str(BIN / "mergekit-yaml"), str(config), str(mount / "out"),
                              "--quiet"], capture_output=True, text=True, env=ENV, cwd=tmp_path)
        lines = [line for line in run.stderr.splitlines() if line.strip()]
        assert run.returncode != 0
        assert lines[-1].startswith(f"Error: disk full while writing {mount / 'out'}"), lines[-1]
        assert "Traceback" not in run.stderr
        assert list(mount.iterdir()) == []
    finally:
        subprocess.run(["umount", str(mount)], check=False)
