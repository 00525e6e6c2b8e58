"""OpenRLHF's own loader of reward models and critics, with bai installed: sane buffers.

With transformers 5.15, `get_llm_for_sequence_regression` leaves its non-persistent `mean` /
`std` buffers uninitialized (OpenRLHF pull request 1343); `openrlhf_patches.value_buffers`
restores them from the config, else 0 / 1. Normalized outputs then equal the raw score.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

pytest.importorskip("openrlhf")


def write_rm(path: Path, **stats: float) -> Path:
    """A seeded tiny Qwen2ForSequenceClassification (`model.*`, `score.weight`)."""
    from transformers import Qwen2Config, Qwen2ForSequenceClassification

    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=64, hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                         num_labels=1, pad_token_id=0)
    Qwen2ForSequenceClassification(config).save_pretrained(path)
    if stats:
        data = json.loads((path / "config.json").read_text())
        (path / "config.json").write_text(json.dumps({**data, **stats}))
    return path


def raw_scores(path: Path, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The checkpoint's own score at the last token, and at every token, by transformers."""
    from transformers import Qwen2ForSequenceClassification

    model = Qwen2ForSequenceClassification.from_pretrained(path, dtype=torch.float32).eval()
    with torch.no_grad():
        hidden = model.model(ids).last_hidden_state
        values = model.score(hidden).squeeze(-1)
    return values[:, -1], values


@pytest.mark.parametrize("stats", [{}, {"mean": 0.25, "std": 2.0}], ids=["default", "config"])
def test_reward_model_and_critic_buffers_and_outputs(tmp_path, stats):
    from openrlhf.models import get_llm_for_sequence_regression

    path = write_rm(tmp_path / "rm", **stats)
    mean, std = stats.get("mean", 0.0), stats.get("std", 1.0)
    ids = torch.randint(1, 64, (3, 7), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    want_reward, want_values = raw_scores(path, ids)
    for kind in ("reward", "critic"):
        for _ in range(2):  # garbage differed between loads: every load must be right
            model = get_llm_for_sequence_regression(
                str(path), kind, normalize_reward=True, param_dtype="bf16",
                attn_implementation="eager").float().eval()
            assert model.mean.item() == mean and model.std.item() == std, kind
            with torch.no_grad():
                if kind == "reward":
                    got = model(ids, attention_mask=mask)
                    want = (want_reward - mean) / std
                else:
                    action_mask = torch.ones(3, 3)
                    got = model(ids, action_mask=action_mask, attention_mask=mask)
                    want = (want_values[:, :-1][:, -3:] - mean) / std
            assert torch.isfinite(got).all(), got
            torch.testing.assert_close(got, want, atol=0.05 * max(1.0, want.abs().max().item()),
                                       rtol=0.02)
