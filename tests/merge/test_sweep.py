"""`bai-sweep`: K complete candidates, each equal to its own bai merge, inputs read once."""

import json

import pytest
import torch
import yaml
from conftest import bai_config, leftovers, load_model, mergekit_yaml, run_cli
from mergekit.io import LazyTensorLoader

from bai_mergekit.errors import BaiMergeError
from bai_mergekit.sweep import run_sweep


@pytest.fixture
def recipe(family, tmp_path):
    path = tmp_path / "bai.yaml"
    path.write_text(yaml.safe_dump(bai_config(family)))
    return path


def test_cli_candidates_equal_single_merges(family, recipe, tmp_path):
    out = tmp_path / "sweep"
    run = run_cli(["bai-sweep", str(recipe), str(out), "--base-weight", "0.1,0.6",
                   "--weights", "0.5,0.5", "--weights", "1,3", "--quiet"])
    assert run.returncode == 0, run.stderr
    index = json.loads((out / "sweep.json").read_text())["candidates"]
    assert len(index) == 4
    cand = next(c for c in index if c["base_weight"] == 0.6 and c["weights"] == [1.0, 3.0])
    cfg = bai_config(family)
    cfg["parameters"]["base_weight"] = 0.6
    cfg["models"][0]["parameters"]["weight"] = 1.0
    cfg["models"][1]["parameters"]["weight"] = 3.0
    single = tmp_path / "single"
    assert mergekit_yaml(cfg, single).returncode == 0
    got, want = load_model(out / cand["path"]), load_model(single)
    assert got.keys() == want.keys()
    for name in want:
        torch.testing.assert_close(got[name], want[name], atol=1e-6, rtol=0, msg=name)
    card = (out / cand["path"] / "README.md").read_text()
    assert "base_weight` = 0.6" in card and "weight 3.0" in card
    reproduced = yaml.safe_load((out / cand["path"] / "mergekit_config.yml").read_text())
    assert reproduced["parameters"]["base_weight"] == 0.6
    assert json.loads((out / cand["path"] / "config.json").read_text())[
        "max_position_embeddings"] == json.loads((single / "config.json").read_text())[
        "max_position_embeddings"]


def test_each_input_tensor_is_read_once(recipe, tmp_path, monkeypatch):
    reads: dict[str, int] = {}
    original = LazyTensorLoader.get_tensor

    def counting(self, key, *args, **kwargs):
        reads[key] = reads.get(key, 0) + 1
        return original(self, key, *args, **kwargs)

    monkeypatch.setattr(LazyTensorLoader, "get_tensor", counting)
    paths = run_sweep(recipe, tmp_path / "s", [0.1, 0.5, 0.9], [], quiet=True)
    assert len(paths) == 3 and all((p / "model.safetensors").is_file() for p in paths)
    assert reads and set(reads.values()) == {3}  # 3 input models, once each, for 3 outputs


def test_bad_grid_value_is_refused_before_writing(recipe, tmp_path):
    out = tmp_path / "s"
    with pytest.raises(BaiMergeError, match=r"base_weight must be in \[0, 1\], got 1.5"):
        run_sweep(recipe, out, [0.5, 1.5], [], quiet=True)
    assert not out.exists() or not any(out.iterdir())


def test_wrong_number_of_weights_is_refused(recipe, tmp_path):
    run = run_cli(["bai-sweep", str(recipe), str(tmp_path / "s"), "--weights", "1,2,3"])
    assert run.returncode != 0
    assert run.stderr.strip().splitlines()[-1].startswith("Error: each --weights needs 2 numbers")
    assert leftovers(tmp_path) == []
