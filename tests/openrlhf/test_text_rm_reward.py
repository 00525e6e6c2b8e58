"""An RM with another tokenizer scores the response TEXT (openrlhf_patches/text_rm_reward.py)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import pytest
import torch

pytest.importorskip("openrlhf")

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
MODULE = os.path.join(REPO, "openrlhf_patches", "text_rm_reward.py")
sys.path.insert(0, os.path.join(REPO, "tests", "e2e"))
from tiny_rm import write_char_rm  # noqa: E402


@pytest.fixture(scope="module")
def family(tmp_path_factory):
    from bai_demo.toy_models import write_tiny_family

    root = tmp_path_factory.mktemp("text-rm")
    write_tiny_family(root / "fam")
    write_char_rm(root / "rm")
    return root / "fam" / "reasoning", root / "rm"


def load_like_openrlhf():
    spec = importlib.util.spec_from_file_location("reward_func", MODULE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # as openrlhf.utils.agent does: no package context
    return module


def test_the_rm_reads_plain_text_in_its_own_tokenizer(family, monkeypatch):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    actor, rm = family
    monkeypatch.setenv("BAI_TEXT_RM", str(rm))
    monkeypatch.setenv("BAI_TEXT_RM_ACTOR", str(actor))
    mod = load_like_openrlhf()
    actor_tok = AutoTokenizer.from_pretrained(actor)
    prompt = actor_tok.apply_chat_template([{"role": "user", "content": "What is 2 + 3?"}],
                                           add_generation_prompt=True, tokenize=False)
    assert "<|im_start|>" in prompt
    queries = [prompt + "add them </think> The answer is 5.<|im_end|>",
               prompt + "no idea<|im_end|>"]
    out = mod.reward_func(queries, [prompt, prompt], ["5", "5"])
    rm_tok = AutoTokenizer.from_pretrained(rm)
    text = mod.rm_text(prompt, queries[0][len(prompt):], rm_tok, actor_tok)
    assert text == "[user] What is 2 + 3?\n[assistant] The answer is 5.\n"
    assert "<|im_start|>" not in text and "<|im_end|>" not in text  # the actor's markup is gone
    ids = rm_tok(text, add_special_tokens=False)["input_ids"]
    assert rm_tok.unk_token_id not in ids  # every character is a token of the RM's own vocab
    model = AutoModelForSequenceClassification.from_pretrained(rm, num_labels=1).eval()
    with torch.no_grad():
        want = float(model(input_ids=torch.tensor([ids])).logits[0, 0])
    assert out["rewards"][0].item() == pytest.approx(want, abs=1e-5)
    assert out["rewards"].shape == (2,) and out["rewards"][0] != out["rewards"][1]
    assert torch.equal(out["scores"], out["rewards"])


def test_missing_settings_fail_with_a_clear_message(monkeypatch):
    monkeypatch.delenv("BAI_TEXT_RM", raising=False)
    mod = load_like_openrlhf()
    with pytest.raises(RuntimeError, match="needs BAI_TEXT_RM"):
        mod.reward_func(["q"], ["p"], ["1"])


def test_recipe_option_uses_the_text_reward_and_a_critic_from_the_actor(family, tmp_path):
    actor, rm = family
    out = subprocess.run(["bash", os.path.join(REPO, "recipes", "openrlhf", "ppo_bai_7b.sh")],
                         env=dict(os.environ, DRY_RUN="1", ACTOR=str(actor), TEXT_RM=str(rm)),
                         capture_output=True, text=True, timeout=60, check=True)
    argv = out.stdout.split("\0")
    assert argv[argv.index("--reward.remote_url") + 1].endswith("text_rm_reward.py")
    assert argv[argv.index("--critic.model_name_or_path") + 1] == str(actor)
    assert "--reward.model_name_or_path" not in argv
    line = [x for x in out.stderr.splitlines() if x.startswith("[bai] PPO:")]
    assert len(line) == 1 and "its own tokenizer" in line[0] and f"from {actor}" in line[0]
    both = subprocess.run(["bash", os.path.join(REPO, "recipes", "openrlhf", "ppo_bai_7b.sh")],
                          env=dict(os.environ, DRY_RUN="1", ACTOR=str(actor), TEXT_RM=str(rm),
                                   REWARD_MODEL=str(rm)), capture_output=True, text=True,
                          timeout=60)
    assert both.returncode == 2 and "not both" in both.stderr
