"""Stock `mergekit-yaml` / `mergekit-multi` in a subprocess: exact, complete, loadable output."""

import json

import pytest
import torch
import yaml
from conftest import bai_config, load_model, mergekit_yaml, run_cli
from safetensors.torch import load_file
from test_method import within_one_bf16_rounding
from transformers import AutoModelForCausalLM, AutoTokenizer


def expected(fam, weights, alpha):
    """The float64 formula over every tensor of the inputs."""
    base = load_model(fam["base"])
    others = [load_model(fam[r]) for r in ("instruct", "reasoning")]
    total = sum(weights)
    return {
        name: alpha * t.double()
        + (1 - alpha) * sum(w / total * o[name].double() for w, o in zip(weights, others))
        for name, t in base.items()
    }


@pytest.fixture(scope="module")
def merged32(family, tmp_path_factory):
    out = tmp_path_factory.mktemp("m32") / "bai-actor"
    cfg = bai_config(family)
    cfg["models"][0]["parameters"]["weight"] = 1.0
    cfg["models"][1]["parameters"]["weight"] = 3.0
    cfg["parameters"]["base_weight"] = 0.3
    run = mergekit_yaml(cfg, out)
    assert run.returncode == 0, run.stderr
    return out


def test_every_tensor_equals_the_fp64_formula(family, merged32):
    got = load_model(merged32)
    want = expected(family, [1.0, 3.0], 0.3)
    assert got.keys() == want.keys()
    for name, tensor in got.items():
        assert tensor.dtype == torch.float32, name
        torch.testing.assert_close(tensor.double(), want[name], atol=1e-6, rtol=0, msg=name)


def test_bf16_every_tensor_is_one_rounding_of_the_formula(family_bf16, tmp_path):
    out = tmp_path / "bai16"
    run = mergekit_yaml(bai_config(family_bf16, dtype="bfloat16"), out)
    assert run.returncode == 0, run.stderr
    got, want = load_model(out), expected(family_bf16, [0.5, 0.5], 0.5)
    for name, tensor in got.items():
        assert tensor.dtype == torch.bfloat16, name
        assert within_one_bf16_rounding(tensor, want[name]), name


def test_output_is_a_complete_model_dir_with_reasoning_config_and_card(family, merged32):
    names = {p.name for p in merged32.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "README.md"} <= names
    assert "chat_template.jinja" in names
    cfg = json.loads((merged32 / "config.json").read_text())
    reasoning = json.loads((family["reasoning"] / "config.json").read_text())
    base = json.loads((family["base"] / "config.json").read_text())
    assert cfg["max_position_embeddings"] == reasoning["max_position_embeddings"]
    assert cfg["max_position_embeddings"] > base["max_position_embeddings"]
    card = (merged32 / "README.md").read_text()
    assert "arXiv 2509.00309" in card and "base_weight` = 0.3" in card
    assert f"`{family['reasoning']}`: 0.525" in card  # 0.7 * 3/4
    assert ".partial-" not in card


def test_merged_model_loads_and_generates(merged32):
    tok = AutoTokenizer.from_pretrained(merged32)
    model = AutoModelForCausalLM.from_pretrained(merged32)
    assert tok.convert_tokens_to_ids("</think>") != tok.unk_token_id
    prompt = tok.apply_chat_template(
        [{"role": "user", "content": "What is 2 + 3?"}], add_generation_prompt=True,
        return_tensors="pt", return_dict=True,
    )
    out = model.generate(**prompt, max_new_tokens=8, do_sample=False)
    assert out.shape[1] == prompt["input_ids"].shape[1] + 8


def test_sharded_output_streams_every_tensor_once_in_mergekits_layout(family, merged32,
                                                                      tmp_path):
    """`--out-shard-size`: the bai merge writes its tensors as they are merged (a writer
    thread, no shard held in memory) into mergekit's file names and index, each shard within
    the size, and loads to the same tensors as the one-file merge. transformers loads it."""
    cfg = bai_config(family)
    cfg["models"][0]["parameters"]["weight"] = 1.0
    cfg["models"][1]["parameters"]["weight"] = 3.0
    cfg["parameters"]["base_weight"] = 0.3
    out = tmp_path / "sharded"
    run = mergekit_yaml(cfg, out, "--out-shard-size", "20K")
    assert run.returncode == 0, run.stderr
    index = json.loads((out / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    n = len(shards)
    assert n > 2 and shards == [f"model-{i:05d}-of-{n:05d}.safetensors" for i in range(1, n + 1)]
    assert index["metadata"]["mergekit_version"] and sorted(
        p.name for p in out.glob("*.safetensors")) == shards
    got, want = load_model(out), load_model(merged32)
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)
    assert index["metadata"]["total_size"] == sum(t.numel() * t.element_size()
                                                  for t in got.values())
    for shard in shards:  # a shard may pass the limit only by holding one large tensor
        tensors = load_file(out / shard)
        assert len(tensors) == 1 or sum(t.numel() * t.element_size()
                                        for t in tensors.values()) <= 20_000
    model = AutoModelForCausalLM.from_pretrained(out)
    assert torch.equal(model.state_dict()["lm_head.weight"], want["lm_head.weight"])


def test_per_layer_gradient_on_base_weight(family, tmp_path):
    cfg = bai_config(family)
    cfg["parameters"]["base_weight"] = [0.2, 0.8]
    out = tmp_path / "grad"
    run = mergekit_yaml(cfg, out)
    assert run.returncode == 0, run.stderr
    got = load_model(out)
    base, ins, rea = (load_model(family[r]) for r in ("base", "instruct", "reasoning"))
    name = "model.layers.{}.mlp.up_proj.weight"
    for layer, alpha in enumerate([0.2, 0.5, 0.8]):  # t = layer / (layers - 1)
        key = name.format(layer)
        want = alpha * base[key].double() + (1 - alpha) * (ins[key] + rea[key]).double() / 2
        torch.testing.assert_close(got[key].double(), want, atol=1e-6, rtol=0, msg=key)


def test_filtered_weight_applies_to_matching_tensors_only(family, tmp_path):
    cfg = bai_config(family)
    cfg["models"][1]["parameters"]["weight"] = [{"filter": "mlp", "value": 0.0}, {"value": 0.5}]
    out = tmp_path / "filt"
    assert mergekit_yaml(cfg, out).returncode == 0
    got = load_model(out)
    base, ins = load_model(family["base"]), load_model(family["instruct"])
    for key in ("model.layers.1.mlp.down_proj.weight", "model.layers.1.self_attn.q_proj.weight"):
        share = 1.0 if "mlp" in key else 0.5
        want = 0.5 * base[key].double() + 0.5 * share * ins[key].double()
        if "mlp" not in key:
            want += 0.25 * load_model(family["reasoning"])[key].double()
        torch.testing.assert_close(got[key].double(), want, atol=1e-6, rtol=0, msg=key)


def test_equals_two_stage_mergekit_multi_and_folded_linear(family, merged32, tmp_path):
    stage1 = {
        "name": "sft",
        "merge_method": "linear",
        "models": [
            {"model": str(family["instruct"]), "parameters": {"weight": 1.0}},
            {"model": str(family["reasoning"]), "parameters": {"weight": 3.0}},
        ],
        "dtype": "float32",
    }
    stage2 = {
        "merge_method": "linear",
        "models": [
            {"model": str(family["base"]), "parameters": {"weight": 0.3}},
            {"model": "sft", "parameters": {"weight": 0.7}},
        ],
        "dtype": "float32",
    }
    multi = tmp_path / "multi.yaml"
    multi.write_text(yaml.safe_dump_all([stage1, stage2], sort_keys=False))
    out = tmp_path / "two-stage"
    run = run_cli(["mergekit-multi", str(multi), "-I", str(tmp_path / "inter"),
                   "--out-path", str(out), "--quiet"])
    assert run.returncode == 0, run.stderr
    folded = {
        "merge_method": "linear",
        "models": [
            {"model": str(family["base"]), "parameters": {"weight": 0.3}},
            {"model": str(family["instruct"]), "parameters": {"weight": 0.7 * 0.25}},
            {"model": str(family["reasoning"]), "parameters": {"weight": 0.7 * 0.75}},
        ],
        "dtype": "float32",
    }
    out_lin = tmp_path / "folded"
    assert mergekit_yaml(folded, out_lin).returncode == 0
    ours = load_model(merged32)
    for other in (load_model(out), load_model(out_lin)):
        for name, tensor in ours.items():
            torch.testing.assert_close(tensor, other[name], atol=1e-6, rtol=0, msg=name)


def test_mergekit_multi_runs_a_bai_stage(family, tmp_path):
    """`bai` is visible to mergekit-multi too, e.g. as the final stage of a recipe."""
    doc = dict(bai_config(family))
    multi = tmp_path / "multi.yaml"
    multi.write_text(yaml.safe_dump_all([doc], sort_keys=False))
    out = tmp_path / "final"
    run = run_cli(["mergekit-multi", str(multi), "-I", str(tmp_path / "inter"),
                   "--out-path", str(out), "--quiet"])
    assert run.returncode == 0, run.stderr
    assert "Balanced Actor Initialization" in (out / "README.md").read_text()
