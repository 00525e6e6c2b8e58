"""The toy world: the small family's roles differ as their names say, in REAL generation, its
BAI actors keep the skill and move between the styles with alpha, and its reward model is of
the instruct kind (the full family's figures over three seeds: docs/toy-world.md)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bai_demo.toy_task import (
    Problem,
    TaskSpec,
    Teacher,
    heldout_problems,
    reasoning_answer,
    trace_lines,
    wrong_answer,
)
from bai_demo.toy_world import FULL, MANIFEST, SMALL, bai_actor, build_family

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent


def test_teacher_trace_carries():
    assert trace_lines(Problem(4821, 937)) == ["1+7+0=08", "2+3+0=05", "8+9+0=17", "4+0+1=05"]
    assert Problem(9, 5, 3).question == "009+005"
    assert reasoning_answer(Problem(9, 5, 2)).endswith("9+5+0=14\n0+0+1=01\n</think>\n14")


def test_a_training_stage_warns_nothing():
    """The toy trainer's loop raises no warning (it once turned the loss, a tensor with a
    gradient, into a float: torch's `requires_grad=True` UserWarning at every build)."""
    import warnings

    from transformers import Qwen2ForCausalLM

    from bai_demo.toy_task import training_stream
    from bai_demo.toy_train import (
        ModelSpec,
        StageSpec,
        build_tokenizer,
        pretraining_batches,
        qwen2_config,
        train_stage,
    )

    tok = build_tokenizer()
    spec = ModelSpec(hidden_size=64, intermediate_size=64, num_hidden_layers=1,
                     num_attention_heads=1, num_key_value_heads=1)
    model = Qwen2ForCausalLM(qwen2_config(spec, tok, "base"))
    batches = pretraining_batches(tok, training_stream(TaskSpec(), 0, set()), 0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loss = train_stage(model, tok, batches, StageSpec(steps=3, lr=1e-3, batch_size=4,
                                                          warmup=1), "test stage")
    assert loss > 0
    assert [str(w.message) for w in caught] == []


def test_teacher_rechecks_vary_the_length_not_the_answer():
    import random

    teacher, p = Teacher(TaskSpec(recheck_max=3), seed=5), Problem(47, 38, 3)
    traces = [teacher(p) for _ in range(40)]
    assert all(t.endswith("</think>\n85") for t in traces)
    counts = {t.count("\ncheck ") for t in traces}
    assert counts == {0, 1, 2, 3}
    assert all(line.removeprefix("check ") in trace_lines(p)
               for t in traces for line in t.splitlines() if line.startswith("check "))
    rng = random.Random(0)
    wrong = {wrong_answer(p, rng) for _ in range(50)}
    assert "85" not in wrong and all(len(w) == 2 and w[0] != "0" for w in wrong)


def test_heldout_is_deterministic_and_distinct():
    spec = TaskSpec(heldout_size=50)
    assert heldout_problems(spec) == heldout_problems(spec)
    assert len(set(heldout_problems(spec))) == 50


def test_recipe_hash_names_the_recipe():
    assert FULL.key != SMALL.key and len(SMALL.key) == 16
    assert SMALL.key == type(SMALL)(**{**SMALL.__dict__}).key


def test_family_files(small_family):
    from transformers import AutoConfig, AutoTokenizer

    manifest = json.loads((small_family.root / MANIFEST).read_text())
    assert manifest["key"] == SMALL.key and small_family.root.name == SMALL.key
    configs = {r: AutoConfig.from_pretrained(small_family.role(r))
               for r in ("base", "instruct", "reasoning")}
    assert all(c.model_type == "qwen2" and c.hidden_size // c.num_attention_heads == 64
               for c in configs.values())
    assert configs["reasoning"].max_position_embeddings == \
        4 * configs["instruct"].max_position_embeddings
    tok = AutoTokenizer.from_pretrained(small_family.reasoning)
    assert len(tok.encode("</think>", add_special_tokens=False)) == 1
    prompt = tok.apply_chat_template([{"role": "user", "content": "001+002"}], tokenize=False,
                                     add_generation_prompt=True)
    assert prompt.endswith("<|im_start|>assistant\n") and "<think>" not in prompt
    rows = [json.loads(line) for line in small_family.heldout_prompts.read_text().splitlines()]
    assert len(rows) == SMALL.task.heldout_size and {"prompt", "label"} <= set(rows[0])
    train = {r["prompt"] for r in map(json.loads, small_family.train_prompts.read_text()
                                      .splitlines())}
    assert not train & {r["prompt"] for r in rows}


def test_reward_model_is_of_the_instruct_kind(small_family):
    """Saved as OpenRLHF loads reward models and critics (`model.*` and the value head
    `score`); it ranks held-out direct answers mostly right (it never saw a think trace)."""
    from safetensors import safe_open
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(small_family.reward_model)
    assert config.architectures == ["Qwen2ForSequenceClassification"] and config.num_labels == 1
    with safe_open(str(small_family.reward_model / "model.safetensors"), "pt") as fh:
        names = set(fh.keys())
    assert "score.weight" in names and all(n.startswith(("model.", "score.")) for n in names)
    figures = small_family.manifest["stages"]["reward"]
    assert figures["problems"] == SMALL.task.heldout_size
    assert figures["pair_accuracy_direct"] >= 0.65, figures
    assert figures["score_direct_correct"] > figures["score_direct_wrong"], figures


def test_second_build_reuses_the_cache(small_family):
    start = time.monotonic()
    again = build_family(SMALL)
    assert again.root == small_family.root and time.monotonic() - start < 5


def test_cli_prints_the_paths(small_family):
    proc = subprocess.run([sys.executable, "-m", "bai_demo.toy_world", "build", "--small",
                           "--json"], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout)  # stdout holds the JSON alone (library logs go to stderr)
    paths = out["paths"]
    assert paths["reasoning"] == str(small_family.reasoning)
    assert paths["reward_model"] == str(small_family.reward_model)
    assert Path(paths["heldout_prompts"]).is_file()
    assert out["reward_model"] == small_family.manifest["stages"]["reward"]


@pytest.fixture(scope="module")
def probe(small_family, tmp_path_factory):
    """bai-probe (vLLM on CPU, fp32, T=1, 3 samples a prompt) of instruct, reasoning and the
    BAI actors at alpha 0.1, 0.5 and 0.9 (stock mergekit-yaml) on the held-out problems."""
    pytest.importorskip("vllm")
    root = tmp_path_factory.mktemp("probe")
    out = root / "probe.json"
    actors = [bai_actor(small_family, a, root / f"bai-a{a}") for a in (0.1, 0.5, 0.9)]
    argv = [str(VENV_BIN / "bai-probe"), str(small_family.instruct), str(small_family.reasoning),
            *map(str, actors), "--prompts", str(small_family.heldout_prompts), "-n", "3",
            "--max-tokens", "96", "--dtype", "float32", "--json", str(out), "--no-samples"]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    print(proc.stdout)
    return {c["name"]: c["metrics"] for c in json.loads(out.read_text())["candidates"]}


def test_reasoning_is_long_and_closes_think(probe):
    inst, reas = probe["instruct"], probe["reasoning"]
    assert reas["bai/response_length/mean"] >= 3 * inst["bai/response_length/mean"], probe
    assert reas["bai/think/closed_ratio"] >= 0.9, reas
    assert inst["bai/think/closed_ratio"] <= 0.05, inst  # answers directly
    # the teacher's re-checks: the think length varies from response to response
    assert reas["bai/response_length/p90"] >= reas["bai/response_length/p10"] + 8, reas


def test_reasoning_is_more_accurate_and_every_bai_actor_beats_instruct(probe):
    acc = {n: m["bai/reward/mean"] for n, m in probe.items()}
    assert acc["reasoning"] >= 0.6 and acc["reasoning"] > acc["instruct"], acc
    assert all(acc[f"bai-a{a}"] > acc["instruct"] for a in (0.1, 0.5, 0.9)), acc


def test_bai_actor_lies_between_on_length(probe):
    """The merge is a working model, not digit soup: its length and think rate lie between its
    parents' and it stops (few responses clipped)."""
    length = {n: m["bai/response_length/mean"] for n, m in probe.items()}
    think = {n: m["bai/think/closed_ratio"] for n, m in probe.items()}
    assert length["instruct"] < length["bai-a0.5"] < length["reasoning"], length
    assert think["instruct"] < think["bai-a0.5"] < think["reasoning"], think
    assert probe["bai-a0.5"]["bai/response_length/clip_ratio"] <= 0.05, probe["bai-a0.5"]
    # more of the base (alpha) is shorter: between the reasoning and the base's mixed styles
    # (neighbours within a token: a family built on another CPU is another sample; measured
    # here 29.8 / 26.5 / 23.2 tokens)
    assert length["bai-a0.1"] > length["bai-a0.9"], length
    assert length["bai-a0.1"] + 1 >= length["bai-a0.5"] >= length["bai-a0.9"] - 1, length


def test_demo_reports_a_failed_merge_in_one_line(small_family, tmp_path):
    """bai-demo over a recipe that mergekit-yaml refuses: one `bai-demo: error:` line, exit 1,
    no merged actor left behind."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("merge_method: bai\nbase_model: ./out/base\nmodels:\n"
                   "  - {model: ./out/instruct, parameters: {weight: 0.5}}\n"
                   "  - {model: ./out/reasoning, parameters: {weight: 0.5}}\n"
                   "parameters: {base_weight: 2.0}\n", encoding="utf-8")
    proc = subprocess.run([str(VENV_BIN / "bai-demo"), "--small", "--out", "out", "--recipe",
                           str(bad)], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={k: v for k, v in os.environ.items() if k != "BAI_TRACEBACK"})
    assert proc.returncode == 1, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f"bai-demo: error: mergekit-yaml {bad} out/bai-actor failed"), last
    assert "base_weight" in proc.stderr  # mergekit-yaml's own line names the bad value
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "out" / "bai-actor").exists()
