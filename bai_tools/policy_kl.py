"""Exact per-token KL between a candidate actor and the reasoning model on the latter's samples."""

from __future__ import annotations

import gc
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from bai_tools.probe_summary import pad_batch

LOG = logging.getLogger(__name__)

ESTIMATOR = "full_vocab"
DEFINITION = (
    "Over the response tokens of the reasoning model's own samples (its probe samples: "
    "prompt x rendered with its chat template, response y sampled by vLLM), at every response "
    "position t the full next-token distributions p_C(.|x,y<t) of the candidate C and "
    "p_R(.|x,y<t) of the reasoning model R (raw logits, temperature 1) are compared: "
    "kl_to_reasoning = mean_t KL(p_C || p_R) = mean_t sum_v p_C(v) log(p_C(v)/p_R(v)); "
    "kl_from_reasoning = mean_t KL(p_R || p_C). The mean is over all response tokens of all "
    "samples pooled (token-weighted), EOS included; nats per token."
)


@dataclass(frozen=True)
class Sequences:
    """Token ids of prompts and their sampled responses (one row per sample)."""

    prompt_ids: tuple[tuple[int, ...], ...]
    response_ids: tuple[tuple[int, ...], ...]

    def __post_init__(self) -> None:
        if len(self.prompt_ids) != len(self.response_ids):
            raise ValueError("one prompt per response is needed")
        if any(len(p) == 0 for p in self.prompt_ids):
            raise ValueError("empty prompt: the first response token has no context")

    @property
    def num_tokens(self) -> int:
        return sum(len(r) for r in self.response_ids)


@dataclass(frozen=True)
class PolicyKL:
    """Token-weighted means of both KL directions (nats per token) and the token count."""

    kl_to_reasoning: float
    kl_from_reasoning: float
    num_tokens: int


def kl_both_ways(logp: torch.Tensor, logq: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per position: (KL(p || q), KL(q || p)) of normalized log-probs of one shape (..., V),
    summed over the vocabulary; an entry of probability 0 adds 0 (0 log 0 = 0)."""
    if logp.shape != logq.shape:
        raise ValueError(f"log-prob shapes differ: {tuple(logp.shape)} vs {tuple(logq.shape)}")
    diff, p, q = logp - logq, logp.exp(), logq.exp()
    return (torch.where(p > 0, p * diff, 0.0).sum(-1), torch.where(q > 0, -q * diff, 0.0).sum(-1))


def pool_kl(terms: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> PolicyKL:
    """Pool per-token (KL(C||R), KL(R||C)) pairs into token-weighted means."""
    count = sum(int(f.numel()) for f, _ in terms)
    if count == 0:
        raise ValueError("no response tokens to average the KL over")
    return PolicyKL(sum(float(f.double().sum()) for f, _ in terms) / count,
                    sum(float(r.double().sum()) for _, r in terms) / count, count)


@torch.inference_mode()
def response_log_probs(model: Any, seqs: Sequences, rows: Sequence[int]) -> list[torch.Tensor]:
    """Float32 next-token log-probs at each response position: one (len(y), V) per row; the
    rows are right-padded into one batch (a causal model with an attention mask ignores it)."""
    device = next(model.parameters()).device
    full = [seqs.prompt_ids[r] + seqs.response_ids[r] for r in rows]
    ids, mask = pad_batch(full)
    logits = model(input_ids=ids.to(device), attention_mask=mask.long().to(device)).logits
    # logits at position j predict token j + 1: the response tokens sit at start..start+n-1
    return [logits[i, len(seqs.prompt_ids[r]) - 1: len(full[i]) - 1].float().log_softmax(-1).cpu()
            for i, r in enumerate(rows)]


def load_causal_lm(model_dir: Path, device: str) -> Any:
    """A transformers causal LM in eval mode: float32 on CPU, the checkpoint's dtype on GPU."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(
        str(model_dir), dtype=torch.float32 if device == "cpu" else "auto")
    return model.to(device).eval()


def _release() -> None:
    """Give back the memory of models the caller has just dropped (its last reference)."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def kl_to_reference(
    model_dirs: Sequence[Path],
    reference_dir: Path,
    seqs: Sequences,
    *,
    device: str | None = None,
    batch_size: int = 8,
    cache_limit_bytes: int = 2 * 1024**3,
    loader: Callable[[Path, str], Any] = load_causal_lm,
) -> list[PolicyKL]:
    """PolicyKL of every model in `model_dirs` against the reference (reasoning) model; a model
    equal to the reference gets exactly 0. The reference's log-probs on `seqs` are computed
    once and cached when they fit in `cache_limit_bytes` (tokens x vocabulary x 4 bytes), then
    one model is loaded at a time; else the reference stays loaded and is re-run per batch."""
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    rows = list(range(len(seqs.prompt_ids)))
    groups = [rows[i: i + batch_size] for i in range(0, len(rows), batch_size)]
    reference = loader(Path(reference_dir), device)
    vocab = int(reference.get_output_embeddings().weight.shape[0])
    cache: list[list[torch.Tensor]] | None = None
    if seqs.num_tokens * vocab * 4 <= cache_limit_bytes:
        cache = [response_log_probs(reference, seqs, rows) for rows in groups]
        reference = None
        _release()
    else:
        LOG.info("reference log-probs exceed the cache limit: keeping the reference loaded")
    results = []
    for model_dir in model_dirs:
        LOG.info("KL: scoring %s", model_dir)
        model = loader(Path(model_dir), device)
        terms = []
        for index, rows in enumerate(groups):
            ref = cache[index] if cache is not None else response_log_probs(reference, seqs, rows)
            for logp, logq in zip(response_log_probs(model, seqs, rows), ref, strict=True):
                if logp.shape != logq.shape:
                    raise ValueError(f"{model_dir}: vocabulary size {logp.shape[-1]} differs "
                                     f"from the reasoning model's {logq.shape[-1]}")
                terms.append(kl_both_ways(logp, logq))
        model = None
        _release()
        results.append(pool_kl(terms))
    return results

