"""`bai-sweep`: K complete candidates, each equal to its own bai merge, inputs read once."""

import json

import pytest
import torch
import yaml
from conftest import bai_config, leftovers, load_model, mergekit_yaml, run_cli
from mergekit.io import LazyTensorLoader

from bai_core.merge_math import BaiMergeError
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


def test_mergekit_yaml_and_sweep_write_the_same_model(family_bf16, tmp_path):
    """One finishing path (DESIGN.md 3d): the same ratio gives the same config files and the
    same tensors from either tool. Rows are merged by id, so the inputs' padded vocabulary
    (512 rows for a 450-token tokenizer, as Qwen2.5 pads 152064) is kept, as a reward model
    or critic built from the same checkpoints expects."""
    from transformers import AutoTokenizer

    fam = family_bf16
    cfg = bai_config(fam, dtype="bfloat16", tokenizer={"source": str(fam["reasoning"])})
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(cfg, sort_keys=False))
    (cand,) = run_sweep(recipe, tmp_path / "sweep", [0.5], [], quiet=True)
    single = tmp_path / "single" / cand.name  # mergekit-yaml on the user's recipe
    assert mergekit_yaml(cfg, single).returncode == 0
    again = tmp_path / "again" / cand.name  # mergekit-yaml on the candidate's own config
    run = run_cli(["mergekit-yaml", str(cand / "mergekit_config.yml"), str(again), "--quiet"])
    assert run.returncode == 0, run.stderr

    def files(folder):
        return sorted(p.name for p in folder.iterdir() if p.suffix != ".safetensors")

    def bai_section(folder):
        return (folder / "README.md").read_text().split("## Balanced Actor Initialization")[1]

    want = load_model(cand)
    for other in (single, again):
        assert files(other) == files(cand)
        for name in set(files(cand)) - {".bai-merge.json", "README.md", "mergekit_config.yml"}:
            assert (other / name).read_bytes() == (cand / name).read_bytes(), (other, name)
        got = load_model(other)
        assert got.keys() == want.keys()
        assert all(torch.equal(got[k], want[k]) for k in want), other
        assert bai_section(other) == bai_section(cand)
    assert (again / "mergekit_config.yml").read_text() == (cand / "mergekit_config.yml").read_text()
    config = json.loads((cand / "config.json").read_text())
    assert config["vocab_size"] == 512 == want["model.embed_tokens.weight"].shape[0]
    assert config["dtype"] == "bfloat16" and "torch_dtype" not in config
    assert config["max_position_embeddings"] == json.loads(
        (fam["reasoning"] / "config.json").read_text())["max_position_embeddings"]
    assert len(AutoTokenizer.from_pretrained(cand)) < 512  # the padding rows are kept


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
    with pytest.raises(BaiMergeError, match=r"base_weight must be a number in \[0, 1\], got 1.5"):
        run_sweep(recipe, out, [0.5, 1.5], [], quiet=True)
    assert not out.exists() or not any(out.iterdir())


def test_wrong_number_of_weights_is_refused(recipe, tmp_path):
    run = run_cli(["bai-sweep", str(recipe), str(tmp_path / "s"), "--weights", "1,2,3"])
    assert run.returncode != 0
    last = run.stderr.strip().splitlines()[-1]
    assert last.startswith("bai-sweep: error: each --weights needs 2 numbers")
    assert leftovers(tmp_path) == []


def test_close_grid_values_get_distinct_folders(recipe, tmp_path):
    paths = run_sweep(recipe, tmp_path / "s", [0.5, 0.5000001], [], quiet=True)
    assert len({p.name for p in paths}) == 2 and all(p.is_dir() for p in paths)
    alphas = [yaml.safe_load((p / "mergekit_config.yml").read_text())["parameters"][
        "base_weight"] for p in paths]
    assert alphas == [0.5, 0.5000001]
    index = json.loads((tmp_path / "s" / "sweep.json").read_text())["candidates"]
    assert [c["base_weight"] for c in index] == [0.5, 0.5000001]


def test_candidate_and_its_mergekit_config_give_the_same_model(family, tmp_path):
    """One parser: an unnormalized recipe stays unnormalized in the sweep and in mergekit-yaml."""
    from mergekit.config import MergeConfiguration
    from mergekit.merge import run_merge
    from mergekit.options import MergeOptions

    cfg = bai_config(family)
    cfg["parameters"]["normalize"] = False
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(cfg))
    (cand,) = run_sweep(path, tmp_path / "s", [0.4], [(0.2, 0.3)], quiet=True)
    text = (cand / "mergekit_config.yml").read_text()
    single = tmp_path / "single"
    run_merge(MergeConfiguration.model_validate(yaml.safe_load(text)), str(single),
              options=MergeOptions(quiet=True), config_source=text)
    got, want = load_model(cand), load_model(single)
    base, ins, rea = (load_model(family[r]) for r in ("base", "instruct", "reasoning"))
    key = "model.layers.1.mlp.up_proj.weight"
    exact = 0.4 * base[key].double() + 0.6 * (0.2 * ins[key] + 0.3 * rea[key]).double()
    torch.testing.assert_close(got[key].double(), exact, atol=1e-6, rtol=0)
    for name in want:
        torch.testing.assert_close(got[name], want[name], atol=1e-6, rtol=0, msg=name)
    index = json.loads((tmp_path / "s" / "sweep.json").read_text())
    assert index["tool"] == "bai-sweep" and index["normalize"] is False
    assert index["base_model"] == {"model": str(family["base"]), "hub_id": None,
                                   "path": str(family["base"].resolve())}
    assert [m["path"] for m in index["models"]] == [
        str(family[r].resolve()) for r in ("instruct", "reasoning")]
    entry = index["candidates"][0]
    assert entry["path"] == cand.name and entry["weights"] == [0.2, 0.3]
    assert entry["weights_normalized"] == [0.2, 0.3]  # normalize: false
    assert entry["weights_by_model"] == {str(family["instruct"]): 0.2,
                                         str(family["reasoning"]): 0.3}
    assert entry["coefficients"]["base"] == 0.4


def test_probe_runs_after_the_grid_and_its_failure_is_one_line(recipe, tmp_path, monkeypatch,
                                                              capsys):
    import sys
    import types

    from bai_tools.sweep_cli import main

    calls = []

    def probe_sweep_dir(out_root, prompts, n, max_tokens, seed):
        calls.append((out_root, prompts, n, max_tokens, seed,
                      (out_root / "sweep.json").is_file()))
        raise RuntimeError("vllm is not installed")

    fake = types.ModuleType("bai_tools.sweep_probe")
    fake.probe_sweep_dir = probe_sweep_dir
    monkeypatch.setitem(sys.modules, "bai_tools.sweep_probe", fake)
    monkeypatch.delenv("BAI_TRACEBACK", raising=False)
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"prompt": "1+1?"}\n')
    out = tmp_path / "s"
    code = main([str(recipe), str(out), "--quiet", "--probe", "--prompts", str(prompts),
                 "-n", "2", "--seed", "7"])
    assert calls == [(out, prompts, 2, 256, 7, True)]
    assert code == 1
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "bai-sweep: error: RuntimeError: vllm is not installed "
        "(-v or BAI_TRACEBACK=1 shows the traceback)")
    assert (out / "bai-a0.5-w0.5_0.5" / "model.safetensors").is_file()


def test_plugin_does_not_import_the_tools():
    """The command line lives in bai_tools; bai_mergekit stays the plugin and the engine."""
    import bai_mergekit.sweep

    assert not hasattr(bai_mergekit.sweep, "main")
