"""Merged actor -> shipped recipe -> bai-train --bai.cpu -> OpenRLHF loop -> metrics -> report.

REINFORCE++ (`reinforce_baseline`, with a reference model for the k2 KL loss) on the tiny
random family, and PPO in the paper's setting on the small toy family (the BAI actor at alpha
0.5; its alignment reward model as OpenRLHF's reward model, normalized as the recipe asks, and as
the critic's start; GAE lambda 0.95, gamma 1.0; a reference model), each 2 steps. (Resuming from
a checkpoint is tested on the stopped collapse run in test_collapse_e2e.py, a reward model with
its own tokenizer on the two-node run in test_two_nodes.py.)
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bai_tools.runlog import CURVES, read_jsonl, read_tensorboard

VENV_BIN = Path(sys.executable).parent


def tail(text: str, n: int = 60) -> str:
    return "\n".join(text.splitlines()[-n:])


# 32 responses a step in 2 optimizer steps (the first update of a run has warm-up lr 0)
SMALL = {"N_SAMPLES": "4", "ROLLOUT_BATCH_SIZE": "8", "TRAIN_BATCH_SIZE": "16", "LR": "1e-2",
         "REWARD_PY": "rewards_len.py"}
MICRO = ("--rollout.micro_batch_size", "8", "--train.micro_batch_size", "8",
         "--bai.baseline_steps", "2")
# vLLM returns its own log-probs, and OpenRLHF logs `vllm_kl` = mean(rollout - actor log-prob):
# the gap between the weights vLLM sampled with and the weights DeepSpeed trains.
IS_CORRECTION = ("--algo.advantage.is_correction_level", "token",
                 "--algo.advantage.is_correction_mode", "clip")
DOCUMENTED = ("bai/response_length/mean", "bai/response_length/median", "bai/response_length/p10",
              "bai/response_length/p90", "bai/response_length/std", "bai/response_length/min",
              "bai/response_length/max", "bai/response_length/clip_ratio",
              "bai/response_length/eos_ratio", "bai/reward/mean", "bai/reward/std",
              "bai/reward_by_length/0000-0100/count", "bai/detector/length_collapse",
              "bai/detector/reward_dip", "bai/reward/zero_spread_group_ratio")


@pytest.fixture(scope="module")
def rpp(run_recipe, stale_ray_cluster_file):
    run = run_recipe("reinforce_pp_bai_7b.sh", "rpp", MICRO + IS_CORRECTION, **SMALL)
    assert run.rc == 0, tail(run.log)
    return run


@pytest.fixture(scope="module")
def rpp_first_rows(rpp):
    return rpp.rows()


@pytest.fixture(scope="module")
def ppo(run_recipe, small_family):
    """PPO on the small toy family's BAI actor, REWARD_MODEL = its reward model (the recipe
    starts the critic from it), fp32 (the RM's scores compare exactly), every response logged."""
    from bai_demo.toy_world import bai_actor

    actor = bai_actor(small_family, 0.5)
    run = run_recipe("ppo_bai_7b.sh", "ppo", (*MICRO, "--bai.samples", "8", "--data.max_samples",
                                              "16"), ACTOR=str(actor),
                     SKIP_MERGE="1", PROMPT_DATA=str(small_family.train_prompts),
                     REWARD_MODEL=str(small_family.reward_model), ROLLOUT_BATCH_SIZE="8",
                     TRAIN_BATCH_SIZE="8", LR="1e-4", MAX_NEW_TOKENS="64", BAI_CPU_DTYPE="fp32")
    assert run.rc == 0, tail(run.log)
    return run


def _bai(row: dict) -> dict:
    return {k: v for k, v in row.items() if k.startswith("bai/")}


def test_cpu_mode_listens_and_connects_on_loopback_only(rpp, ppo):
    """Ray (GCS, raylet, API server, agents, workers), vLLM, DeepSpeed's gloo/TCPStore
    rendezvous and the weight sync's TCP store: sampled every second, and every connect, listen
    and host lookup of their Python processes audited: nothing leaves 127.0.0.0/8 (Ray's API
    server probed the cloud metadata servers at start until openrlhf_patches.ray_offline)."""
    assert rpp.sockets == [] and ppo.sockets == [], "\n".join(rpp.sockets + ppo.sockets)
    for run in (rpp, ppo):  # the audit covered the processes that talk
        for part in ("bin/bai-train", "ray/dashboard/dashboard.py", "default_worker.py"):
            assert any(part in cmd for cmd in run.audited), (part, run.audited)


def test_recipe_merged_the_actor_with_stock_mergekit(rpp, workspace):
    # the first recipe run of the session merged it (stock mergekit-yaml); later runs reuse it
    logs = [p.read_text(errors="replace") for p in workspace.glob("*.log")]
    assert sum("merging it with merge.yaml" in log for log in logs) == 1
    card = (workspace / "actor" / "README.md").read_text()
    assert "bai" in card and (workspace / "actor" / "config.json").is_file()


def test_cpu_mode_announced_once(rpp):
    assert rpp.log.count("CPU mode (--bai.cpu)") == 1


def test_one_jsonl_row_per_step_with_documented_keys(rpp_first_rows):
    assert [r["step"] for r in rpp_first_rows] == [1, 2]
    for row in rpp_first_rows:
        missing = [k for k in DOCUMENTED if k not in row]
        assert not missing, missing
        assert 0 < row["bai/response_length/mean"] <= 32


@pytest.mark.parametrize("name", ["rpp", "ppo"])
def test_tensorboard_has_the_same_bai_values(name, rpp, ppo):
    run = {"rpp": rpp, "ppo": ppo}[name]
    rows = [r for r in run.rows() if r["step"] <= 2]
    tb = read_tensorboard(next(run.tensorboard.iterdir()))
    for row in rows:
        for key, value in _bai(row).items():
            if value is None:
                continue
            assert key in tb.series, f"train/{key} missing from TensorBoard"
            assert tb.series[key][row["step"]] == pytest.approx(value, rel=1e-5, abs=1e-6), key


def test_kl_logged_only_when_openrlhf_computed_it(rpp_first_rows, ppo):
    # REINFORCE++ recipe: KL as a loss term, so info["kl"] is all zeros: nothing logged
    assert not [k for r in rpp_first_rows for k in r if k.startswith("bai/kl/")]
    # PPO recipe: KL penalty against the reference model (init_coef > 0, not a loss)
    for row in ppo.rows():
        assert "bai/kl/mean" in row and "bai/kl/max" in row
        assert row["bai/kl/max"] >= row["bai/kl/mean"]


def test_ppo_rewards_are_the_toy_reward_models_own_scores(ppo, small_family):
    """OpenRLHF's reward model (`--reward.model_name_or_path`, `--reward.normalize_enable`) and
    the critic started from it: finite rewards, each the RM's own score of that response (its
    normalization buffers restored to 0 / 1: openrlhf_patches.value_buffers)."""
    from transformers import AutoTokenizer, Qwen2ForSequenceClassification

    rm = small_family.reward_model
    line = [x for x in ppo.log.splitlines() if x.startswith("[bai] PPO: reward = ")]
    assert len(line) == 1 and f"reward model {rm} (the actor's token ids)" in line[0], line
    assert f"critic initialized from {rm}" in line[0]
    rows = ppo.rows()
    assert [r["step"] for r in rows] == [1, 2]
    assert all(abs(r["bai/reward/mean"]) < 50 for r in rows), rows
    samples = [json.loads(x) for x in (ppo.out_dir / "bai_samples.jsonl").read_text()
               .splitlines()]
    assert [s["step"] for s in samples] == [1] * 8 + [2] * 8
    tok = AutoTokenizer.from_pretrained(rm)
    model = Qwen2ForSequenceClassification.from_pretrained(rm, dtype=torch.float32).eval()
    with torch.no_grad():
        for sample in samples:
            ids = tok(sample["prompt"] + sample["response"], add_special_tokens=False,
                      return_tensors="pt").input_ids
            assert ids.shape[1] == len(tok(sample["prompt"], add_special_tokens=False)
                                       .input_ids) + sample["response_length"], sample
            # the value head at the last token, where OpenRLHF reads a reward; transformers'
            # own pooling would skip a final <|endoftext|> (the RM config's pad token id)
            own = float(model.score(model.model(input_ids=ids).last_hidden_state)[0, -1, 0])
            assert sample["reward"] == pytest.approx(own, abs=1e-3), sample
    tb = read_tensorboard(next(ppo.tensorboard.iterdir()))
    critic = [k for k in tb.series if "critic_loss" in k or k.endswith("values")]
    assert critic and all(torch.isfinite(torch.tensor(list(tb.series[k].values()))).all()
                          for k in critic), critic


def _policy_kl(model_a: Path, model_b: Path, prompts: list[str]) -> float:
    """Mean per-token KL(a || b) over sequences sampled from a (transformers, CPU)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_a)
    a = AutoModelForCausalLM.from_pretrained(model_a, dtype=torch.float32)
    b = AutoModelForCausalLM.from_pretrained(model_b, dtype=torch.float32)
    torch.manual_seed(0)
    total, count = 0.0, 0
    for prompt in prompts:
        ids = tok.apply_chat_template([{"role": "user", "content": prompt}],
                                      add_generation_prompt=True, return_tensors="pt",
                                      return_dict=True)["input_ids"]
        seq = a.generate(ids, max_new_tokens=32, do_sample=True, temperature=1.0, top_p=1.0)
        with torch.no_grad():
            la = torch.log_softmax(a(seq).logits[0, ids.shape[1] - 1:-1], -1)
            lb = torch.log_softmax(b(seq).logits[0, ids.shape[1] - 1:-1], -1)
        total += float((la.exp() * (la - lb)).sum())
        count += la.shape[0]
    return total / count


def test_weight_sync_moved_vllm_weights(rpp, workspace):
    tb = read_tensorboard(next(rpp.tensorboard.iterdir()))
    # (a real gradient at step 1: `moved` below; DeepSpeed logs no grad norm for an fp32
    # ZeRO-0 run, which the CPU mode is on CPUs without native bf16)
    mismatch = abs(tb.series["vllm_kl"][2])  # vLLM vs DeepSpeed weights while sampling step 2
    moved = _policy_kl(workspace / "actor", rpp.out_dir / "ckpt" / "global_step1_hf",
                       [f"What is {i} + {i}?" for i in range(6)])
    # Had vLLM kept the initial weights, step 2's gap would be about KL(initial || step 1)
    assert moved > 0.02, f"step 1 barely changed the actor (KL {moved:.4f}): no test"
    assert mismatch < 0.25 * moved, (mismatch, moved)
    # our worker extension logs this after vLLM's `reload_weights` returned (vLLM's own
    # "Reloading weights inplace" line does not always reach the driver's log)
    assert "bai: vLLM CPU engine reloaded" in rpp.log


def _report(*runs: str) -> dict:
    out = subprocess.run([str(VENV_BIN / "bai-report"), *runs, "--json"], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_report_same_curves_from_jsonl_and_tensorboard(ppo, tmp_path):
    from_jsonl = read_jsonl(ppo.jsonl)
    from_tb = read_tensorboard(next(ppo.tensorboard.iterdir()))
    for curve in CURVES:
        s1, v1 = from_jsonl.curve(curve)
        s2, v2 = from_tb.curve(curve)
        assert s1 == s2, curve
        assert v1 == pytest.approx(v2, rel=1e-5, abs=1e-6), curve
    a, b = _report(str(ppo.jsonl))["runs"][0], _report(str(ppo.tensorboard))["runs"][0]
    for key in ("steps", "length_collapse", "reward_hockey_stick"):
        assert json.dumps(a[key], sort_keys=True) == json.dumps(b[key], sort_keys=True), key
    png = tmp_path / "report.png"
    out = subprocess.run([str(VENV_BIN / "bai-report"), str(ppo.jsonl), "--png", str(png)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_relative_paths_resolved_from_the_recipe_folder(rpp, workspace):
    assert f"from {workspace / 'rewards_len.py'}" in rpp.log  # the relative --reward.remote_url
    assert (workspace / "runs" / "rpp" / "bai_metrics.jsonl").is_file()
