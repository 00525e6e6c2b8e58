"""bai-sweep-probe end to end: a tiny family, a real bai-sweep and the real vLLM engine (CPU)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from bai_tools import sweep_probe
from bai_tools.sweep_probe import ENTRY_KEYS, SweepProbeError, read_sweep

pytest.importorskip("vllm")

N, MAX_TOKENS, SEED = 2, 16, 1
ALPHAS = (0.0, 0.4, 0.8)
WEIGHT_SETS = ((0.0, 1.0), (0.5, 0.5))  # (0, 1) at alpha 0 is the reasoning model itself
PROMPTS = [
    {"prompt": "What is 7 + 5?", "answer": "12"},
    {"prompt": "Solve 2x + 4 = 10.", "label": "3"},
    {"prompt": "Say something."},
]


def _recipe(family: dict[str, Path], **params) -> dict:
    return {
        "merge_method": "bai",
        "base_model": str(family["base"]),
        "models": [{"model": str(family["instruct"]), "parameters": {"weight": 0.5}},
                   {"model": str(family["reasoning"]), "parameters": {"weight": 0.5}}],
        "parameters": {"base_weight": 0.5, **params},
        "dtype": "float32",
    }


@pytest.fixture(scope="module")
def family(tmp_path_factory) -> dict[str, Path]:
    from bai_demo.toy_models import TinySpec, write_tiny_family

    spec = TinySpec(hidden_size=64, intermediate_size=128, num_attention_heads=1,
                    num_key_value_heads=1)
    return write_tiny_family(tmp_path_factory.mktemp("sweep-family"), spec=spec, seed=3)


@pytest.fixture(scope="module")
def swept(family, tmp_path_factory) -> Path:
    from bai_mergekit.sweep import run_sweep

    root = tmp_path_factory.mktemp("sweep")
    recipe = root / "bai.yaml"
    recipe.write_text(yaml.safe_dump(_recipe(family)))
    run_sweep(recipe, root / "out", list(ALPHAS), list(WEIGHT_SETS), quiet=True)
    return root / "out"


@pytest.fixture(scope="module")
def probed(swept, tmp_path_factory):
    """Run the CLI once on the sweep; returns (report, stdout)."""
    root = tmp_path_factory.mktemp("probe")
    prompts = root / "prompts.jsonl"
    prompts.write_text("".join(json.dumps(p) + "\n" for p in PROMPTS), encoding="utf-8")
    stdout = root / "stdout.txt"
    saved_env = dict(os.environ)
    try:
        with stdout.open("w", encoding="utf-8") as handle, contextlib.redirect_stdout(handle):
            assert sweep_probe.main(
                [str(swept), "--prompts", str(prompts), "-n", str(N),
                 "--max-tokens", str(MAX_TOKENS), "--seed", str(SEED)]) == 0
    finally:
        os.environ.clear()
        os.environ.update(saved_env)
    report = json.loads((swept / "sweep-probe.json").read_text(encoding="utf-8"))
    return report, stdout.read_text(encoding="utf-8")


def _by_name(report) -> dict[str, dict]:
    return {e["name"]: e for e in report["entries"]}


def _cand(report, alpha: float, weights: tuple[float, ...]) -> str:
    """The name of the candidate entry with these ratios (folder naming is bai-sweep's)."""
    (name,) = [e["name"] for e in report["entries"] if e["kind"] == "candidate"
               and e["base_weight"] == alpha and tuple(e["weights"]) == weights]
    return name


def test_one_entry_per_candidate_and_input(probed, family, swept):
    report, _ = probed
    index = json.loads((swept / "sweep.json").read_text())["candidates"]
    entries = report["entries"]
    assert len(entries) == len(ALPHAS) * len(WEIGHT_SETS) + 3
    for entry in entries:
        assert tuple(entry) == ENTRY_KEYS
        assert entry["num_samples"] == N * len(PROMPTS)
        assert entry["num_prompts"] == len(PROMPTS) and entry["num_scored"] == N * 2
        for key in ("mean", "p10", "p90", "clip_ratio"):
            assert f"bai/response_length/{key}" in entry["metrics"]
        assert {"bai/think/closed_ratio", "bai/think/think_length_mean",
                "bai/think/answer_length_mean", "bai/reward/mean"} <= set(entry["metrics"])
    cands = [e for e in entries if e["kind"] == "candidate"]
    assert {(e["base_weight"], tuple(e["weights"])) for e in cands} == {
        (a, w) for a in ALPHAS for w in WEIGHT_SETS}
    for e in cands:
        assert e["role"] is None and e["name"] == Path(e["model_dir"]).name
        assert e["model_dir"] == str(swept / e["name"])
        assert e["weight_set"] == "w=" + ",".join(f"{w:g}" for w in e["weights"])
    assert [e["name"] for e in cands] == [c["path"] for c in index]
    inputs = [(e["name"], e["role"], e["model_dir"]) for e in entries if e["kind"] == "input"]
    assert inputs == [("base", "base", str(family["base"])),
                      ("instruct", "sft", str(family["instruct"])),
                      ("reasoning", "reasoning", str(family["reasoning"]))]
    assert report["reasoning"] == {"name": "reasoning", "model_dir": str(family["reasoning"]),
                                   "chosen_by": "last non-base model"}
    assert report["settings"]["n"] == N and report["settings"]["max_tokens"] == MAX_TOKENS
    assert report["settings"]["seed"] == SEED
    assert report["paper_choices"] == {"best_benchmarks": [0.1], "most_stable": [0.5, 0.6]}
    reasoning = _by_name(report)["reasoning"]
    mean_len = reasoning["metrics"]["bai/response_length/mean"]
    assert report["kl"]["num_tokens"] == round(mean_len * reasoning["num_samples"])
    assert report["kl"]["estimator"] == "full_vocab"


def test_same_seed_same_samples(probed):
    """The candidate equal to the reasoning model samples exactly what the reasoning model does."""
    report = probed[0]
    by_name = _by_name(report)
    assert by_name[_cand(report, 0.0, (0.0, 1.0))]["metrics"] == by_name["reasoning"]["metrics"]


def test_kl_zero_for_the_reasoning_model_and_grows_with_alpha(probed):
    report = probed[0]
    by_name = _by_name(report)
    for key in ("kl_to_reasoning", "kl_from_reasoning"):
        assert by_name["reasoning"][key] == 0.0
        assert by_name[_cand(report, 0.0, (0.0, 1.0))][key] == pytest.approx(0.0, abs=1e-9)
        line = [by_name[_cand(report, a, (0.0, 1.0))][key] for a in ALPHAS]
        assert line[0] < line[1] < line[2] < by_name["base"][key]  # alpha = 1 is the base
        mixed = [by_name[_cand(report, a, (0.5, 0.5))][key] for a in ALPHAS]
        assert mixed[0] > 1e-4 and mixed[2] > mixed[0]
        assert by_name["instruct"][key] > 1e-4


def test_png_has_k_points_per_line(probed, swept):
    from matplotlib.image import imread

    from bai_tools.plots import SWEEP_PANELS as PANELS
    from bai_tools.plots import sweep_figure

    report, stdout = probed
    image = imread(swept / "sweep-probe.png")
    assert image.ndim == 3 and image.shape[0] > 400 and image.shape[1] > 800
    fig = sweep_figure(report)
    for ax, (_, keys) in zip(fig.axes, PANELS, strict=True):
        lines = [ln for ln in ax.get_lines() if (ln.get_gid() or "").startswith("series:")]
        assert len(lines) == len(WEIGHT_SETS) * len(keys)
        for line in lines:
            assert list(line.get_xdata()) == list(ALPHAS)
    assert stdout.splitlines()[0].split()[:2] == ["model", "alpha"]
    assert len(stdout.strip().splitlines()) == 2 + len(report["entries"])


def test_ratios_and_inputs_from_mergekit_configs(swept, family, tmp_path):
    """A bare sweep.json (folders only) still gives ratios, inputs and the reasoning model."""
    index = json.loads((swept / "sweep.json").read_text())["candidates"]
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "sweep.json").write_text(json.dumps(
        {"candidates": [{"path": str(swept / c["path"])} for c in index]}))
    layout = read_sweep(bare)
    assert [(c.base_weight, c.weights) for c in layout.candidates] == [
        (c["base_weight"], tuple(c["weights"])) for c in index]
    assert [i.model_dir for i in layout.inputs] == [family[r] for r in
                                                     ("base", "instruct", "reasoning")]
    assert layout.reasoning_chosen_by == "last non-base model"
    chosen = read_sweep(swept, reasoning="instruct")
    assert (chosen.reasoning.model_dir, chosen.reasoning_chosen_by) == (
        family["instruct"], "argument")
    with pytest.raises(SweepProbeError, match="not a non-base input"):
        read_sweep(swept, reasoning="base")


def test_config_source_names_the_reasoning_model(swept, family, tmp_path):
    copy = tmp_path / "copy"
    index = json.loads((swept / "sweep.json").read_text())["candidates"]
    name = next(c["path"] for c in index if c["base_weight"] == 0.4 and c["weights"] == [0.5, 0.5])
    shutil.copytree(swept / name, copy / name)
    cfg = yaml.safe_load((copy / name / "mergekit_config.yml").read_text())
    cfg["parameters"]["config_source"] = str(family["instruct"])
    (copy / name / "mergekit_config.yml").write_text(yaml.safe_dump(cfg))
    (copy / "sweep.json").write_text(json.dumps({"candidates": [{"path": name}]}))
    layout = read_sweep(copy)
    assert layout.reasoning.model_dir == family["instruct"]
    assert layout.reasoning_chosen_by == "parameters.config_source"
    assert [i.role for i in layout.inputs] == ["base", "reasoning", "sft"]
    # bai-sweep's own index names config_source (as the recipe spells it): it is used too
    full = json.loads((swept / "sweep.json").read_text())
    full["config_source"] = str(family["instruct"])
    full["candidates"] = [{"path": str(swept / c["path"])} for c in full["candidates"]]
    (copy / "sweep.json").write_text(json.dumps(full))
    layout = read_sweep(copy)
    assert layout.reasoning.model_dir == family["instruct"]


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    return subprocess.run([sys.executable, "-m", "bai_tools.sweep_probe", *args],
                          capture_output=True, text=True, env=env)


def test_errors_are_one_line(swept, tmp_path):
    run = _cli(str(tmp_path / "missing"))
    assert run.returncode == 1
    assert run.stderr.strip() == f"bai-sweep-probe: error: sweep folder not found: " \
                                 f"{tmp_path / 'missing'}"
    with pytest.raises(SweepProbeError, match="no sweep.json"):
        sweep_probe.probe_sweep_dir(tmp_path, None, 1, 4, 0)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "x"}\n')
    with pytest.raises(SweepProbeError, match=r"bad.jsonl:1: missing field 'prompt'"):
        sweep_probe.probe_sweep_dir(swept, bad, 1, 4, 0)
