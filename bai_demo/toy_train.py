"""Train the toy world's roles from scratch: a byte tokenizer, tiny Qwen2 models, a plain loop."""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from bai_demo.toy_task import (
    CHAT_TEMPLATE,
    ENDOFTEXT,
    IM_END,
    IM_START,
    SPECIAL_TOKENS,
    Problem,
    raw_documents,
)

LOG = logging.getLogger(__name__)
IGNORE = -100
WORKED_SHARE = 0.7  # pretraining documents that are worked sums (the rest: bare equations)


@dataclass(frozen=True)
class ModelSpec:
    """Shape of the toy Qwen2 (about 0.66M parameters); head_dim = hidden / heads = 64, which
    vLLM's CPU attention needs."""

    hidden_size: int = 128
    intermediate_size: int = 256
    num_hidden_layers: int = 4
    num_attention_heads: int = 2
    num_key_value_heads: int = 1
    max_position_embeddings: int = 512
    reasoning_context_factor: int = 4  # the distilled model advertises a longer context


@dataclass(frozen=True)
class StageSpec:
    """One training stage: AdamW steps of `batch_size` sequences, warm-up then cosine decay."""

    steps: int
    lr: float
    batch_size: int = 32
    warmup: int = 30
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.01


def build_tokenizer():
    """A byte-level tokenizer without merges (one token per byte, so one per digit) plus the
    Qwen-style special tokens and the chat template; deterministic, nothing is trained."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for ch in alphabet:
        vocab[ch] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=None,
        eos_token=IM_END,
        pad_token=ENDOFTEXT,
        additional_special_tokens=[IM_START, *SPECIAL_TOKENS[3:]],
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def qwen2_config(spec: ModelSpec, tokenizer, role: str):
    """The Qwen2 config of one role; the vocabulary is exactly the tokenizer's (no padding
    rows, so every merge tool sees the same shapes)."""
    from transformers import Qwen2Config

    factor = spec.reasoning_context_factor if role == "reasoning" else 1
    pad = tokenizer.convert_tokens_to_ids(ENDOFTEXT)
    return Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_hidden_layers,
        num_attention_heads=spec.num_attention_heads,
        num_key_value_heads=spec.num_key_value_heads,
        max_position_embeddings=spec.max_position_embeddings * factor,
        tie_word_embeddings=False,
        bos_token_id=pad,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=pad,
        dtype=torch.float32,
    )


def _lr_at(step: int, stage: StageSpec) -> float:
    if step < stage.warmup:
        return stage.lr * (step + 1) / stage.warmup
    progress = (step - stage.warmup) / max(1, stage.steps - stage.warmup)
    cosine = 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return stage.lr * (stage.min_lr_ratio + (1 - stage.min_lr_ratio) * cosine)


def _collate(tokenizer, sequences: Sequence[tuple[list[int], int]]) -> dict[str, torch.Tensor]:
    """Right-padded batch; `(ids, n_prompt)` pairs, loss only after the first n_prompt ids."""
    width = max(len(ids) for ids, _ in sequences)
    pad = tokenizer.pad_token_id
    input_ids = torch.full((len(sequences), width), pad, dtype=torch.long)
    labels = torch.full_like(input_ids, IGNORE)
    mask = torch.zeros_like(input_ids)
    for row, (ids, n_prompt) in enumerate(sequences):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        labels[row, n_prompt : len(ids)] = torch.tensor(ids[n_prompt:])
        mask[row, : len(ids)] = 1
    return {"input_ids": input_ids, "attention_mask": mask, "labels": labels}


def pretraining_batches(tokenizer, problems: Iterator[Problem], seed: int
                        ) -> Iterator[Callable[[int], list[tuple[list[int], int]]]]:
    """Raw domain text (no chat format): bare equations and worked sums, one document a row,
    each ended by <|endoftext|>; loss on every token."""
    rng = random.Random(f"pretrain-{seed}")
    end = tokenizer.convert_tokens_to_ids(ENDOFTEXT)

    def batch(size: int) -> list[tuple[list[int], int]]:
        docs = [raw_documents(next(problems))[rng.random() < WORKED_SHARE] for _ in range(size)]
        return [(ids + [end], 0) for ids in tokenizer(docs, add_special_tokens=False).input_ids]

    while True:
        yield batch


def sft_batches(tokenizer, problems: Iterator[Problem], answer: Callable[[Problem], str]
                ) -> Iterator[Callable[[int], list[tuple[list[int], int]]]]:
    """Chat-formatted prompts with the role's answer and <|im_end|>; loss on the answer only."""
    end = tokenizer.convert_tokens_to_ids(IM_END)
    marker = "\x00QUESTION\x00"
    template = tokenizer.apply_chat_template([{"role": "user", "content": marker}],
                                             tokenize=False, add_generation_prompt=True)

    def batch(size: int) -> list[tuple[list[int], int]]:
        rows = []
        for p in (next(problems) for _ in range(size)):
            prompt = template.replace(marker, p.question)  # = the chat template's rendering
            ids = tokenizer(prompt, add_special_tokens=False).input_ids
            reply = tokenizer(answer(p), add_special_tokens=False).input_ids
            rows.append((ids + reply + [end], len(ids)))
        return rows

    while True:
        yield batch


def train_stage(model, tokenizer, batches: Iterator, stage: StageSpec, desc: str) -> float:
    """Run one stage in fp32 with a tqdm bar; returns the mean loss of its last 20 steps."""
    model.train()
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embed" not in n]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2 or "embed" in n]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": stage.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=stage.lr, betas=(0.9, 0.98))
    make = next(batches)
    return run_steps(model, opt, stage.steps, desc, lambda step: _lr_at(step, stage),
                     lambda step: model(**_collate(tokenizer, make(stage.batch_size))).loss)


def run_steps(model, opt, steps: int, desc: str, lr_at: Callable[[int], float],
              loss_at: Callable[[int], torch.Tensor]) -> float:
    """`steps` optimizer steps with a tqdm bar (lr set per step, gradients clipped at 1); the
    model is left in eval mode; returns the mean loss of the last 20 steps."""
    recent: list[float] = []
    start = time.monotonic()
    bar = tqdm(range(steps), desc=desc, unit="step", mininterval=2.0)
    for step in bar:
        for group in opt.param_groups:
            group["lr"] = lr_at(step)
        loss = loss_at(step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        recent = (recent + [loss.detach().item()])[-20:]
        if step % 10 == 0:
            bar.set_postfix(loss=f"{sum(recent) / len(recent):.4f}")
    bar.close()
    model.eval()
    final = sum(recent) / len(recent)
    LOG.info("%s: %d steps in %.0f s, final loss %.4f", desc, steps,
             time.monotonic() - start, final)
    return final


def save_role(model, tokenizer, out: Path, role: str, spec: ModelSpec) -> Path:
    """Save one role in fp32 with the family's tokenizer; generation stops at <|im_end|> or
    <|endoftext|> (the base's document end), as Qwen2.5's generation configs do."""
    from transformers import GenerationConfig, Qwen2ForCausalLM

    config = qwen2_config(spec, tokenizer, role)
    clone = Qwen2ForCausalLM(config)
    clone.load_state_dict(model.state_dict())
    clone.to(torch.float32)
    clone.generation_config = GenerationConfig(
        bos_token_id=config.bos_token_id, pad_token_id=config.pad_token_id,
        eos_token_id=[tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids(ENDOFTEXT)],
    )
    clone.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out
