"""One generation round's raw samples: per-sample values, the global gather, the core batch."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import torch

from bai_core.monitor import ResponseBatch

__all__ = ["Round", "eos_and_pad_ids", "local_round", "gather_rounds", "batch_from_rounds",
           "total_rewards"]

# One round of one process: equal-length lists, one entry per completion. "rewards" and
# "scores" are None when unknown (a reward model or an unwrapped function in the list).
Round = dict[str, list | None]


def eos_and_pad_ids(model: Any, tokenizer: Any) -> set[int]:
    """The ids that end a completion, as TRL 1.16 counts them for `completions/clipped_ratio`:
    the generation config's eos ids, the tokenizer's eos id and its pad id."""
    ids: set[int] = set()
    gen = getattr(model, "generation_config", None)
    eos = getattr(gen, "eos_token_id", None)
    if isinstance(eos, int):
        ids.add(eos)
    elif isinstance(eos, Iterable):
        ids.update(int(i) for i in eos if i is not None)
    for name in ("eos_token_id", "pad_token_id"):
        value = getattr(tokenizer, name, None)
        if isinstance(value, int):
            ids.add(value)
    return ids


def _float(value: Any) -> float:
    """TRL's reading of one reward: None is NaN (the function does not apply)."""
    return math.nan if value is None else float(value)


def total_rewards(per_func: Sequence[Sequence[Any]], weights: Sequence[float]) -> list[float]:
    """TRL's logged `reward` per completion: the weighted nansum over reward functions in
    float32, NaN where every function returned None/NaN (TRL's "unscorable" rows)."""
    table = torch.tensor([[_float(v) for v in out] for out in per_func], dtype=torch.float32)
    w = torch.tensor(list(weights), dtype=torch.float32).unsqueeze(1)
    total = (table * w).nansum(dim=0)
    total[torch.isnan(table).all(dim=0)] = math.nan
    return total.tolist()


def local_round(completion_ids: Sequence[Sequence[int]], end_ids: set[int],
                think_ids: Sequence[int], rewards: list[float] | None,
                scores: list[float] | None) -> Round:
    """Per-completion length (tokens, as TRL's `completions/mean_length`), clipped flag (no
    end id as the last token), offset of the first `</think>` (-1: none), reward, score."""
    think = set(think_ids)
    lengths, truncated, think_end = [], [], []
    for ids in completion_ids:
        ids = [int(i) for i in ids]
        lengths.append(len(ids))
        truncated.append(bool(ids) and ids[-1] not in end_ids)
        think_end.append(next((i for i, t in enumerate(ids) if t in think), -1))
    return {"lengths": lengths, "truncated": truncated,
            "think_end": think_end if think else None, "rewards": rewards, "scores": scores}


def gather_rounds(rounds: list[Round], num_processes: int) -> list[Round]:
    """The global rounds: round k of every process, concatenated in process order (the order
    TRL gathers rewards in, so prompt groups stay contiguous). Every process must call this
    at the same point (it is a collective when num_processes > 1)."""
    if num_processes <= 1:
        return rounds
    from accelerate.utils import gather_object

    flat = gather_object([rounds])  # one entry per process, in process order
    out: list[Round] = []
    for k in range(len(rounds)):
        parts = [per_process[k] for per_process in flat]
        out.append(_concat(parts))
    return out


def _concat(parts: Sequence[Round]) -> Round:
    merged: Round = {}
    for key in parts[0]:
        values = [p.get(key) for p in parts]
        merged[key] = None if any(v is None for v in values) else [x for v in values for x in v]
    return merged


def batch_from_rounds(rounds: Sequence[Round], num_generations: int) -> ResponseBatch | None:
    """The core's ResponseBatch over all global rounds of one optimizer step; group ids from
    TRL's layout (each prompt's `num_generations` completions are consecutive in a round)."""
    rounds = [r for r in rounds if r.get("lengths")]
    if not rounds:
        return None
    merged = _concat(rounds)
    groups = None
    if num_generations > 1:
        ids, offset = [], 0
        for r in rounds:
            n = len(r["lengths"])
            ids.extend(offset + i // num_generations for i in range(n))
            offset += -(-n // num_generations)
        groups = torch.tensor(ids, dtype=torch.long)

    def tensor(key: str, dtype: torch.dtype) -> torch.Tensor | None:
        values = merged.get(key)
        return None if values is None else torch.tensor(values, dtype=dtype)

    return ResponseBatch(
        lengths=tensor("lengths", torch.long), truncated=tensor("truncated", torch.bool),
        think_end=tensor("think_end", torch.long), rewards=tensor("rewards", torch.float32),
        scores=tensor("scores", torch.float32), group_ids=groups)
