"""An RM with another tokenizer scores the response TEXT (openrlhf_patches/text_rm_reward.py)."""

from __future__ import annotations

import importlib.util
import os
import subprocess

import pytest
import torch

pytest.importorskip("openrlhf")

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
MODULE = os.path.join(REPO, "openrlhf_patches", "text_rm_reward.py")
RM_TEMPLATE = ("{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}")


def _char_tokenizer():
    """A character-level tokenizer that shares nothing with the actor's BPE one."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    chars = sorted(set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
                       " +-*/=?.:[]\n<>_|"))
    vocab = {"<pad>": 0, "<unk>": 1, **{c: i + 2 for i, c in enumerate(chars)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>")
    fast.chat_template = RM_TEMPLATE
    return fast


@pytest.fixture(scope="module")
def family(tmp_path_factory):
    from transformers import LlamaConfig, LlamaForSequenceClassification

    from bai_demo.toy_models import write_tiny_family

    root = tmp_path_factory.mktemp("text-rm")
    write_tiny_family(root / "fam")
    rm_tok = _char_tokenizer()
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(rm_tok), hidden_size=64, intermediate_size=128,
                         num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                         num_labels=1, pad_token_id=0)
    LlamaForSequenceClassification(config).save_pretrained(root / "rm")
    rm_tok.save_pretrained(root / "rm")
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
