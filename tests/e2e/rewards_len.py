"""TEST-ONLY reward for the end-to-end runs: longer answers score more (signal for REINFORCE++)."""

import torch


def reward_func(queries, prompts, labels, **kwargs):
    r = torch.tensor([min(len(q) - len(p), 200) / 200.0 for q, p in zip(queries, prompts)])
    return {"rewards": r, "scores": r.clone(), "extra_logs": {}}
