"""TEST-ONLY reward that pays for short answers, to induce a Sequence Length Collapse on purpose.

reward = max(0, 1 - n / MAX_NEW_TOKENS) for a response that ended with EOS after n tokens, 0 for
one cut at the limit. OpenRLHF passes the decoded query (prompt + response, special tokens kept).
"""

import os

import torch

MAX_NEW_TOKENS = int(os.environ.get("BAI_TEST_MAX_NEW_TOKENS", "32"))
EOS = "<|im_end|>"
_tok = None


def _tokenizer():
    global _tok
    if _tok is None:
        from transformers import AutoTokenizer

        _tok = AutoTokenizer.from_pretrained(os.environ["BAI_TEST_ACTOR"])
    return _tok


def reward_func(queries, prompts, labels, **kwargs):
    tok = _tokenizer()
    out = []
    for query, prompt in zip(queries, prompts):
        response = query[len(prompt):]
        ended = response.rstrip().endswith(EOS)
        n = len(tok(response, add_special_tokens=False)["input_ids"])
        out.append(max(0.0, 1.0 - n / MAX_NEW_TOKENS) if ended else 0.0)
    r = torch.tensor(out, dtype=torch.float32)
    return {"rewards": r, "scores": r.clone(), "extra_logs": {}}
