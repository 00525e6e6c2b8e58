"""The toy world's alignment reward model: Bradley-Terry on instruct-style preference pairs."""

from __future__ import annotations

import copy
import logging
import math
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from bai_demo.toy_task import (
    IM_END,
    Problem,
    TaskSpec,
    Teacher,
    direct_answer,
    wrong_answer,
)
from bai_demo.toy_train import run_steps

LOG = logging.getLogger(__name__)
Pair = tuple[list[int], list[int]]  # (chosen ids, rejected ids): chat prompt + reply + <|im_end|>


@dataclass(frozen=True)
class RewardSpec:
    """Training of the reward model: AdamW steps of `batch_pairs` pairs (warm-up, then cosine)
    from the base's weights and a new scalar head. `trace_share` of the pairs are think traces
    (chosen: the teacher's trace with the right sum; rejected: the same trace, one digit of the
    sum changed): 0 is the paper's case, an RM of the instruct kind that never saw a trace."""

    steps: int = 300
    lr: float = 3e-4
    batch_pairs: int = 32
    warmup: int = 30
    trace_share: float = 0.0


def _reply_ids(tokenizer, template: str, marker: str, problem: Problem, reply: str) -> list[int]:
    text = template.replace(marker, problem.question) + reply
    return tokenizer(text, add_special_tokens=False).input_ids + [
        tokenizer.convert_tokens_to_ids(IM_END)]


def chat_ids(tokenizer) -> Callable[[Problem, str], list[int]]:
    """(problem, reply) -> the ids OpenRLHF hands a reward model: the chat-formatted prompt
    with the generation prompt, the reply and <|im_end|> (the score is read at that last id)."""
    marker = "\x00QUESTION\x00"
    template = tokenizer.apply_chat_template([{"role": "user", "content": marker}],
                                             tokenize=False, add_generation_prompt=True)
    return lambda problem, reply: _reply_ids(tokenizer, template, marker, problem, reply)


def preference_pairs(tokenizer, problems: Iterator[Problem], task: TaskSpec, seed: int,
                     trace_share: float) -> Iterator[Callable[[int], list[Pair]]]:
    """Batches of pairs: a correct answer is chosen over the same answer with one digit wrong;
    direct answers, and `trace_share` of them think traces."""
    rng = random.Random(f"pairs-{task.seed}-{seed}")
    teacher = Teacher(task, seed)
    ids = chat_ids(tokenizer)

    def pair(problem: Problem) -> Pair:
        wrong = wrong_answer(problem, rng)
        if rng.random() < trace_share:
            trace = teacher(problem)
            head = trace[: len(trace) - len(problem.answer)]
            return ids(problem, trace), ids(problem, head + wrong)
        return ids(problem, direct_answer(problem)), ids(problem, wrong)

    def batch(size: int) -> list[Pair]:
        return [pair(next(problems)) for _ in range(size)]

    while True:
        yield batch


def _pad(rows: Sequence[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row)
        mask[i, : len(row)] = 1
    return ids, mask


def scores(model, tokenizer, rows: Sequence[list[int]], batch: int = 64) -> torch.Tensor:
    """The model's score of each id row at its last token (no gradient)."""
    out = []
    with torch.no_grad():
        for start in range(0, len(rows), batch):
            ids, mask = _pad(rows[start:start + batch], tokenizer.pad_token_id)
            out.append(model(input_ids=ids, attention_mask=mask).logits[:, 0].float())
    return torch.cat(out) if out else torch.empty(0)


def train_reward_model(base, tokenizer, batches: Iterator, spec: RewardSpec,
                       desc: str = "reward model (Bradley-Terry)"):
    """A Qwen2ForSequenceClassification (one label) with the weights of `base` (a causal LM)
    and a new scalar head `score`, trained on `batches` of pairs; returns the model (eval)."""
    from transformers import Qwen2ForSequenceClassification

    config = copy.deepcopy(base.config)
    config.num_labels = 1
    config.architectures = ["Qwen2ForSequenceClassification"]
    model = Qwen2ForSequenceClassification(config)
    model.model.load_state_dict(base.model.state_dict())
    with torch.no_grad():
        model.score.weight.normal_(0.0, 1.0 / math.sqrt(config.hidden_size + 1))
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=spec.lr, betas=(0.9, 0.98),
                            weight_decay=0.0)
    make = next(batches)

    def lr_at(step: int) -> float:
        if step < spec.warmup:
            return spec.lr * (step + 1) / spec.warmup
        progress = (step - spec.warmup) / max(1, spec.steps - spec.warmup)
        return spec.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))

    def loss_at(step: int) -> torch.Tensor:
        pairs = make(spec.batch_pairs)
        ids, mask = _pad([c for c, _ in pairs] + [r for _, r in pairs], tokenizer.pad_token_id)
        reward = model(input_ids=ids, attention_mask=mask).logits[:, 0]
        chosen, rejected = reward[: len(pairs)], reward[len(pairs):]
        return -torch.nn.functional.logsigmoid(chosen - rejected).mean()

    run_steps(model, opt, spec.steps, desc, lr_at, loss_at)
    return model


def reward_figures(model, tokenizer, problems: Sequence[Problem], task: TaskSpec,
                   seed: int = 99) -> dict[str, float]:
    """What the RM does on held-out problems: pair accuracy on direct answers and on think
    traces, and its mean score on correct / wrong direct answers and think traces."""
    rng, teacher, ids = random.Random(f"rm-eval-{seed}"), Teacher(task, seed), chat_ids(tokenizer)
    rows: dict[str, list[list[int]]] = {k: [] for k in ("direct_ok", "direct_wrong",
                                                         "trace_ok", "trace_wrong")}
    for p in problems:
        wrong = wrong_answer(p, rng)
        trace = teacher(p)
        head = trace[: len(trace) - len(p.answer)]
        rows["direct_ok"].append(ids(p, direct_answer(p)))
        rows["direct_wrong"].append(ids(p, wrong))
        rows["trace_ok"].append(ids(p, trace))
        rows["trace_wrong"].append(ids(p, head + wrong))
    s = {k: scores(model, tokenizer, v) for k, v in rows.items()}
    return {
        "pair_accuracy_direct": float((s["direct_ok"] > s["direct_wrong"]).float().mean()),
        "pair_accuracy_trace": float((s["trace_ok"] > s["trace_wrong"]).float().mean()),
        "score_direct_correct": float(s["direct_ok"].mean()),
        "score_direct_wrong": float(s["direct_wrong"].mean()),
        "score_trace_correct": float(s["trace_ok"].mean()),
        "score_trace_wrong": float(s["trace_wrong"].mean()),
        "trace_beats_direct": float((s["trace_ok"] > s["direct_ok"]).float().mean()),
        "problems": len(problems),
    }


def save_reward_model(model, tokenizer, out: Path) -> Path:
    """Save in the format OpenRLHF 0.11.2 loads as `--reward.model_name_or_path` and as the
    critic's start (`--critic.model_name_or_path`): `model.*` and the value head `score`."""
    model.config.pad_token_id = tokenizer.pad_token_id
    model.to(torch.float32).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out
