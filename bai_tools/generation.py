"""Thin vLLM adapter: sample n responses per chat prompt from one candidate actor."""

from __future__ import annotations

import gc
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bai_core.cli import BaiError
from bai_core.constants import THINK_CLOSE, THINK_OPEN

LOG = logging.getLogger(__name__)

@dataclass(frozen=True)
class SamplingSettings:
    """Rollout sampling settings (OpenRLHF's defaults: temperature 1.0, top_p 1.0)."""

    n: int = 4
    max_tokens: int = 256
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int = 0


@dataclass(frozen=True)
class Sample:
    """One sampled response: its token ids exactly as vLLM returned them."""

    prompt_index: int
    token_ids: tuple[int, ...]
    finish_reason: str | None
    text: str


@dataclass
class Generation:
    """All samples of one candidate plus the tokenizer facts the summary needs."""

    model_dir: Path
    samples: list[Sample]
    think_close_ids: list[int]
    think_open_in_prompt: list[bool]
    engine: dict[str, Any] = field(default_factory=dict)


def think_open_at_end(prompt_text: str) -> bool:
    """True when the rendered prompt leaves a `<think>` block open for the response."""
    return prompt_text.rfind(THINK_OPEN) > prompt_text.rfind(THINK_CLOSE)


class GenerationError(BaiError):
    """A candidate that cannot be sampled as asked (e.g. its tokenizer has no chat template)."""


def render_prompts(tokenizer: Any, conversations: Sequence[Sequence[dict[str, str]]]):
    """Apply the chat template (with the generation prompt) and tokenize as OpenRLHF does."""
    if not getattr(tokenizer, "chat_template", None):
        raise GenerationError(
            "its tokenizer has no chat template (set one, e.g. the reasoning model's, "
            "as RL prompts use it)"
        )
    texts = [
        tokenizer.apply_chat_template(list(c), add_generation_prompt=True, tokenize=False)
        for c in conversations
    ]
    ids = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    return texts, ids


def _prepare_cpu_env() -> None:
    """On vLLM's CPU backend: a 1 GiB KV cache and an in-process engine, unless set already.

    The in-process engine starts in seconds instead of ~30 s (no spawned engine-core and
    worker processes re-importing torch); on GPUs vLLM's defaults are left alone.
    """
    from vllm.platforms import current_platform

    if current_platform.is_cpu():
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")


def _shutdown(llm: Any) -> None:
    engine_core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
    shutdown = getattr(engine_core, "shutdown", None)
    if callable(shutdown):
        try:
            shutdown()
        except Exception:  # noqa: BLE001 - best effort cleanup, the results are already out
            LOG.debug("vLLM engine shutdown failed", exc_info=True)


def generate_vllm(
    model_dir: Path,
    conversations: Sequence[Sequence[dict[str, str]]],
    settings: SamplingSettings,
    *,
    dtype: str = "auto",
    enforce_eager: bool = True,
    engine_args: dict[str, Any] | None = None,
) -> Generation:
    """Start one vLLM engine on `model_dir`, sample, free the engine, return the samples."""
    import vllm
    from transformers import AutoTokenizer

    _prepare_cpu_env()
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    try:
        texts, prompt_ids = render_prompts(tokenizer, conversations)
    except GenerationError as exc:
        raise GenerationError(f"{model_dir}: {exc}") from None
    kwargs: dict[str, Any] = {
        "model": str(model_dir),
        "dtype": dtype,
        "enforce_eager": enforce_eager,
        "max_model_len": max(len(p) for p in prompt_ids) + settings.max_tokens,
        "seed": settings.seed,
    }
    kwargs.update(engine_args or {})
    LOG.info("Starting vLLM on %s", model_dir)
    llm = vllm.LLM(**kwargs)
    try:
        params = vllm.SamplingParams(
            n=settings.n,
            temperature=settings.temperature,
            top_p=settings.top_p,
            max_tokens=settings.max_tokens,
            skip_special_tokens=False,  # keep `</think>` in the text, as the reward sees it
        )
        requests = [{"prompt_token_ids": ids} for ids in prompt_ids]
        outputs = llm.generate(requests, params, use_tqdm=True)
    finally:
        _shutdown(llm)
        del llm
        gc.collect()
    samples = [
        Sample(index, tuple(c.token_ids), c.finish_reason, c.text)
        for index, out in enumerate(outputs)
        for c in out.outputs
    ]
    return Generation(
        model_dir=Path(model_dir),
        samples=samples,
        think_close_ids=tokenizer.encode(THINK_CLOSE, add_special_tokens=False),
        think_open_in_prompt=[think_open_at_end(t) for t in texts],
        engine={k: v for k, v in kwargs.items() if k != "model"},
    )
