"""Bad input: a one-line error naming the bad value, a non-zero exit, no complete-looking output."""

import errno
import json
import shutil

import pytest
import torch
import yaml
from conftest import SPEC, bai_config, leftovers, mergekit_yaml
from safetensors.torch import load_file, save_file

from bai_core.merge_math import BaiMergeError
from bai_demo.toy_models import write_tiny_family
from bai_mergekit.output import MARKER, write_marker


def refused(cfg, out, *needles):
    """Run mergekit-yaml, expect failure with a one-line `Error:` naming every needle."""
    run = mergekit_yaml(cfg, out)
    assert run.returncode != 0
    last = [line for line in run.stderr.splitlines() if line.strip()][-1]
    assert last.startswith("Error: "), run.stderr[-2000:]
    for needle in needles:
        assert needle in last, last
    assert not out.exists(), "a failed merge left an output directory"
    assert leftovers(out.parent) == []
    return last


def with_params(family, **params):
    cfg = bai_config(family)
    cfg["parameters"].update(params)
    return cfg


@pytest.mark.parametrize("alpha", [1.5, -0.1])
def test_base_weight_out_of_range(family, tmp_path, alpha):
    refused(with_params(family, base_weight=alpha), tmp_path / "o", "base_weight", str(alpha))


def test_base_weight_gradient_end_out_of_range(family, tmp_path):
    refused(with_params(family, base_weight=[0.1, 1.2]), tmp_path / "o", "got 1.2")


def test_negative_weight(family, tmp_path):
    cfg = bai_config(family)
    cfg["models"][1]["parameters"]["weight"] = -0.5
    refused(cfg, tmp_path / "o", "weight of", str(family["reasoning"]), "-0.5")


def test_all_zero_weights(family, tmp_path):
    cfg = bai_config(family)
    for m in cfg["models"]:
        m["parameters"]["weight"] = 0.0
    refused(cfg, tmp_path / "o", "must not all be zero")


def test_no_base_model(family, tmp_path):
    cfg = bai_config(family)
    del cfg["base_model"]
    refused(cfg, tmp_path / "o", "base_model")


def test_two_base_models(family, tmp_path):
    text = yaml.safe_dump(bai_config(family), sort_keys=False)
    text += f"base_model: {family['instruct']}\n"
    refused(text, tmp_path / "o", "'base_model' is given twice", str(family["instruct"]))


def test_base_also_listed_as_model(family, tmp_path):
    cfg = bai_config(family)
    cfg["models"].append({"model": str(family["base"]), "parameters": {"weight": 1.0}})
    refused(cfg, tmp_path / "o", "both base_model and in models", str(family["base"]))


def test_missing_model_path(family, tmp_path):
    cfg = bai_config(family)
    cfg["models"][0]["model"] = str(tmp_path / "no-such-model")
    refused(cfg, tmp_path / "o", "model path not found", "no-such-model")


def test_architecture_mismatch(family, tmp_path):
    odd = write_tiny_family(tmp_path / "odd", spec=SPEC.__class__(num_hidden_layers=2))
    cfg = bai_config(family)
    cfg["models"][0]["model"] = str(odd["instruct"])
    refused(cfg, tmp_path / "o", "num_hidden_layers = 2", "has 3")


def test_vocabulary_size_mismatch(family, tmp_path):
    odd = write_tiny_family(tmp_path / "odd", spec=SPEC.__class__(num_hidden_layers=3,
                                                                  vocab_size=640))
    cfg = bai_config(family)
    cfg["models"][1]["model"] = str(odd["reasoning"])
    refused(cfg, tmp_path / "o", "vocabulary size mismatch", "640", "512")


def test_repurposed_token_ids_without_tokenizer_block(family, tmp_path):
    """R1-Distill re-purposes reserved ids: same size, different tokens -> refuse silent mix."""
    odd = tmp_path / "renamed"
    shutil.copytree(family["reasoning"], odd)
    tok = json.loads((odd / "tokenizer.json").read_text())
    think = next(t for t in tok["added_tokens"] if t["content"] == "</think>")
    think["content"] = "<|box_end|>"
    (odd / "tokenizer.json").write_text(json.dumps(tok))
    cfg = bai_config(family)
    cfg["models"][1]["model"] = str(odd)
    refused(cfg, tmp_path / "o", f"token id {think['id']}", "'<|box_end|>'", "'</think>'")


def test_nan_weight_names_tensor_and_model_and_keeps_previous_output(family, tmp_path):
    odd = tmp_path / "nan-model"
    shutil.copytree(family["reasoning"], odd)
    tensors = load_file(odd / "model.safetensors")
    tensors["model.layers.2.mlp.up_proj.weight"][0, 0] = float("nan")
    save_file(tensors, odd / "model.safetensors", metadata={"format": "pt"})
    out = tmp_path / "o"
    out.mkdir()
    (out / "config.json").write_text("{}")  # a previous, complete output must survive
    write_marker(out, "mergekit-yaml")  # ... and it is one an earlier merge wrote
    cfg = bai_config(family)
    cfg["models"][1]["model"] = str(odd)
    run = mergekit_yaml(cfg, out)
    assert run.returncode != 0
    last = run.stderr.strip().splitlines()[-1]
    assert last.startswith("Error: NaN/Inf in input tensor 'model.layers.2.mlp.up_proj.weight'")
    assert str(odd) in last and "(1 values)" in last
    assert sorted(p.name for p in out.iterdir()) == [MARKER, "config.json"]
    assert leftovers(tmp_path) == []


def test_full_disk_mid_merge_leaves_nothing(family, tmp_path, monkeypatch):
    from mergekit.config import MergeConfiguration
    from mergekit.merge import run_merge
    from mergekit.options import MergeOptions

    from bai_mergekit import safetensors_stream

    calls = {"n": 0}
    original = safetensors_stream._write_all

    def write_then_fail(fh, tensor):  # the writer thread's write() of each tensor's data
        calls["n"] += 1
        if calls["n"] > 5:
            raise OSError(errno.ENOSPC, "No space left on device")
        return original(fh, tensor)

    monkeypatch.setattr(safetensors_stream, "_write_all", write_then_fail)
    out = tmp_path / "o"
    config = MergeConfiguration.model_validate(bai_config(family))
    with pytest.raises(BaiMergeError, match="disk full while writing"):
        run_merge(config, str(out), options=MergeOptions(quiet=True))
    assert calls["n"] > 5
    assert not out.exists() and leftovers(tmp_path) == []


def test_run_merge_from_python_sees_bai(family, tmp_path):
    """mergekit.merge.run_merge (no CLI) gets the same checks and atomic output."""
    from mergekit.config import MergeConfiguration
    from mergekit.merge import run_merge
    from mergekit.options import MergeOptions

    out = tmp_path / "py"
    run_merge(MergeConfiguration.model_validate(bai_config(family)), str(out),
              options=MergeOptions(quiet=True))
    assert (out / "model.safetensors").is_file()
    assert torch.isfinite(load_file(out / "model.safetensors")["lm_head.weight"]).all()
