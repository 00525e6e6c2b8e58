"""OpenRLHF 0.11.2 custom reward: a reward model with ITS OWN tokenizer scores the response text.

OpenRLHF hands a `--reward.model_name_or_path` model the actor's token ids as they are, but a
BAI actor's tokenizer (DeepSeek-R1-Distill's) re-purposes Qwen2.5's reserved ids (`<think>`,
...), so an RM with another tokenizer would read other tokens. `--reward.remote_url
path/to/text_rm_reward.py` hands it text instead: the user message (out of the actor's chat
template) and the answer (after `</think>`, else the whole response; no actor special tokens),
in the RM's chat template. Settings: BAI_TEXT_RM (the RM: a one-label sequence-classification
model with its tokenizer), BAI_TEXT_RM_ACTOR (the actor, for its tokenizer),
BAI_TEXT_RM_DEVICE (default "cpu"), BAI_TEXT_RM_MAX_LEN (default 4096 RM tokens).
OpenRLHF loads this file by path, without package context: imports must be absolute.
"""

from __future__ import annotations

import os
import threading
from functools import lru_cache
from typing import Any

import torch

from bai_core.constants import THINK_CLOSE
from openrlhf_patches.math_reward import response_part

__all__ = ["reward_func", "rm_text"]

_LOCK = threading.Lock()  # OpenRLHF calls reward_func from worker threads


@lru_cache(maxsize=1)
def _models() -> tuple[Any, Any, Any, str]:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    rm_path = os.environ.get("BAI_TEXT_RM")
    actor_path = os.environ.get("BAI_TEXT_RM_ACTOR")
    if not rm_path or not actor_path:
        raise RuntimeError("text_rm_reward.py needs BAI_TEXT_RM (the reward model) and "
                           "BAI_TEXT_RM_ACTOR (the actor, for its tokenizer)")
    device = os.environ.get("BAI_TEXT_RM_DEVICE", "cpu")
    rm_tok = AutoTokenizer.from_pretrained(rm_path)
    actor_tok = AutoTokenizer.from_pretrained(actor_path)
    model = AutoModelForSequenceClassification.from_pretrained(rm_path, num_labels=1)
    return model.to(device).eval(), rm_tok, actor_tok, device


def _plain(text: str, tokenizer: Any) -> str:
    """`text` without the tokenizer's special tokens (chat markup, `<think>` tags kept when
    they are ordinary text of that tokenizer)."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return tokenizer.decode(ids, skip_special_tokens=True).strip()


def user_message(prompt: str, actor_tok: Any) -> str:
    """The user's message inside a single-turn prompt made by the actor's chat template; the
    prompt without special tokens when it does not have that shape."""
    marker = "\x00BAI\x00"
    try:
        shell = actor_tok.apply_chat_template([{"role": "user", "content": marker}],
                                              add_generation_prompt=True, tokenize=False)
        head, tail = shell.split(marker)
    except Exception:
        head = tail = None
    if head is not None and prompt.startswith(head) and prompt.endswith(tail):
        return prompt[len(head):len(prompt) - len(tail)].strip()
    return _plain(prompt, actor_tok)


def rm_text(prompt: str, response: str, rm_tok: Any, actor_tok: Any) -> str:
    """What the RM reads: the user message and the answer in the RM's chat template."""
    answer = response.rsplit(THINK_CLOSE, 1)[1] if THINK_CLOSE in response else response
    user, answer = user_message(prompt, actor_tok), _plain(answer, actor_tok)
    if getattr(rm_tok, "chat_template", None):
        return rm_tok.apply_chat_template(
            [{"role": "user", "content": user}, {"role": "assistant", "content": answer}],
            tokenize=False)
    return f"{user}\n{answer}"


def reward_func(queries: list[str], prompts: list[str], labels: list[str], **kwargs) -> dict:
    """{"rewards", "scores", "extra_logs"} tensors of shape (B,): the RM's score per sample."""
    model, rm_tok, actor_tok, device = _models()
    max_len = int(os.environ.get("BAI_TEXT_RM_MAX_LEN", "4096"))
    texts = [rm_text(p or "", response_part(q, p or ""), rm_tok, actor_tok)
             for q, p in zip(queries, prompts, strict=True)]
    scores = []
    with _LOCK, torch.no_grad():
        for text in texts:
            enc = rm_tok(text, return_tensors="pt", truncation=True, max_length=max_len,
                         add_special_tokens=False).to(device)
            scores.append(float(model(**enc).logits.reshape(-1)[0]))
    t = torch.tensor(scores, dtype=torch.float32)
    return {"rewards": t, "scores": t.clone(), "extra_logs": {"text_rm_score": t.clone()}}
