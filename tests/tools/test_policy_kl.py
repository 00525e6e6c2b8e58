"""The per-token policy KL: closed-form numbers and a prefix-by-prefix hand computation."""

from __future__ import annotations

import math

import pytest
import torch

from bai_tools.policy_kl import Sequences, kl_both_ways, kl_to_reference, pool_kl

VOCAB = 48


def test_kl_both_ways_closed_form():
    p = torch.tensor([[0.5, 0.5], [0.25, 0.75]]).log()
    q = torch.tensor([[0.9, 0.1], [0.25, 0.75]]).log()
    forward, reverse = kl_both_ways(p, q)
    want_forward = 0.5 * math.log(0.5 / 0.9) + 0.5 * math.log(0.5 / 0.1)
    want_reverse = 0.9 * math.log(0.9 / 0.5) + 0.1 * math.log(0.1 / 0.5)
    assert forward.tolist() == pytest.approx([want_forward, 0.0], abs=1e-6)
    assert reverse.tolist() == pytest.approx([want_reverse, 0.0], abs=1e-6)
    assert want_forward != pytest.approx(want_reverse)  # the two directions differ


def test_zero_probability_terms_count_as_zero():
    p = torch.tensor([1.0, 0.0]).log()  # log 0 = -inf
    q = torch.tensor([0.5, 0.5]).log()
    forward, reverse = kl_both_ways(p, q)
    assert float(forward) == pytest.approx(math.log(2))
    assert math.isinf(float(reverse))  # q puts mass where p has none


def test_pool_is_token_weighted():
    terms = [(torch.tensor([1.0, 3.0]), torch.tensor([0.0, 0.0])),
             (torch.tensor([5.0]), torch.tensor([6.0]))]
    pooled = pool_kl(terms)
    assert (pooled.kl_to_reasoning, pooled.kl_from_reasoning, pooled.num_tokens) == (3.0, 2.0, 3)


def _tiny(seed: int):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    cfg = Qwen2Config(vocab_size=VOCAB, hidden_size=64, intermediate_size=128,
                      num_hidden_layers=2, num_attention_heads=1, num_key_value_heads=1,
                      tie_word_embeddings=False)
    model = Qwen2ForCausalLM(cfg).eval()
    with torch.no_grad():  # larger weights than the 0.02 init: visibly different policies
        for param in model.parameters():
            param.mul_(8.0 if param.ndim > 1 else 1.0)
    return model


SEQS = Sequences(
    prompt_ids=((3, 4, 5), (7,), (9, 10, 11, 12, 13), (2, 2)),
    response_ids=((6, 1, 8, 20), (30, 31), (14,), (40, 41, 42, 43, 44, 45)),
)


def _hand_kl(cand, ref) -> tuple[float, float, int]:
    """Each response position on its own, unbatched and unpadded, summed in float64."""
    forward = reverse = 0.0
    count = 0
    with torch.no_grad():
        for prompt, response in zip(SEQS.prompt_ids, SEQS.response_ids, strict=True):
            for t in range(len(response)):
                prefix = torch.tensor([list(prompt) + list(response[:t])])
                p = cand(input_ids=prefix).logits[0, -1].double().softmax(-1)
                q = ref(input_ids=prefix).logits[0, -1].double().softmax(-1)
                forward += sum(float(p[v] * (p[v] / q[v]).log()) for v in range(VOCAB))
                reverse += sum(float(q[v] * (q[v] / p[v]).log()) for v in range(VOCAB))
                count += 1
    return forward / count, reverse / count, count


@pytest.mark.parametrize("cache_limit", [2**30, 0], ids=["cached", "reference-kept-loaded"])
def test_matches_hand_computation(cache_limit):
    models = {"ref": _tiny(0), "cand": _tiny(1)}
    loaded = []

    def loader(path, device):
        loaded.append(str(path))
        return models[str(path)]

    got, same = kl_to_reference(["cand", "ref"], "ref", SEQS, device="cpu", batch_size=3,
                                cache_limit_bytes=cache_limit, loader=loader)
    forward, reverse, count = _hand_kl(models["cand"], models["ref"])
    assert got.num_tokens == count == SEQS.num_tokens == 13
    assert got.kl_to_reasoning == pytest.approx(forward, rel=1e-4)
    assert got.kl_from_reasoning == pytest.approx(reverse, rel=1e-4)
    assert got.kl_to_reasoning > 1e-3 and got.kl_from_reasoning > 1e-3
    assert (same.kl_to_reasoning, same.kl_from_reasoning) == (0.0, 0.0)
    assert loaded == ["ref", "cand", "ref"]  # the reference is loaded once either way


def test_vocabulary_mismatch_is_refused():
    from transformers import Qwen2Config, Qwen2ForCausalLM

    other = Qwen2ForCausalLM(Qwen2Config(vocab_size=VOCAB + 16, hidden_size=64,
                                         intermediate_size=128, num_hidden_layers=1,
                                         num_attention_heads=1, num_key_value_heads=1)).eval()
    models = {"ref": _tiny(0), "other": other}
    with pytest.raises(ValueError, match="vocabulary size 64 differs"):
        kl_to_reference(["other"], "ref", SEQS, device="cpu",
                        loader=lambda path, device: models[str(path)])
