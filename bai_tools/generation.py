"""Probe prompts (JSONL: `prompt` plus an optional reference `answer`/`label`) and a thin vLLM
adapter that samples n responses per chat prompt from one candidate actor."""

from __future__ import annotations

import gc
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from bai_core.cli import BaiError, iter_text_lines
from bai_core.constants import THINK_CLOSE, THINK_OPEN

LOG = logging.getLogger(__name__)


class PromptFileError(ValueError):
    """A prompt file that is missing, empty or malformed; the message names file and line."""


class GenerationError(BaiError):
    """A candidate that cannot be sampled as asked (e.g. its tokenizer has no chat template)."""


@dataclass(frozen=True)
class ProbePrompt:
    """One probe prompt: chat messages and, when known, the reference answer."""

    messages: tuple[dict[str, str], ...]
    reference: str | None = None


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

    samples: list[Sample]
    think_close_ids: list[int]
    think_open_in_prompt: list[bool]
    engine: dict[str, Any] = field(default_factory=dict)


def default_prompts_path() -> Path:
    """Path of the math prompt set shipped with the package."""
    return Path(str(resources.files("bai_tools") / "data" / "default_prompts.jsonl"))


def _messages(value: object, where: str, key: str) -> tuple[dict[str, str], ...]:
    if isinstance(value, str) and value.strip():
        return ({"role": "user", "content": value},)
    if isinstance(value, str):
        raise PromptFileError(f"{where}: field {key!r} is empty")
    if isinstance(value, list) and value and all(
            isinstance(m, dict) and isinstance(m.get("role"), str)
            and isinstance(m.get("content"), str) for m in value):
        return tuple({"role": m["role"], "content": m["content"]} for m in value)
    raise PromptFileError(f"{where}: field {key!r} must be a non-empty string or a list of "
                          "{'role', 'content'} messages")


def load_prompts(path: Path, input_key: str = "prompt") -> list[ProbePrompt]:
    """Read a JSONL prompt file; raise PromptFileError naming the file (and line) on problems."""
    path = Path(path)
    if not path.is_file():
        raise PromptFileError(f"{path}: prompt file not found")
    prompts = []
    for where, line in iter_text_lines(path, PromptFileError):
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise PromptFileError(f"{where}: invalid JSON ({exc.msg})") from None
        if not isinstance(record, dict):
            raise PromptFileError(f"{where}: expected a JSON object")
        if input_key not in record:
            raise PromptFileError(f"{where}: missing field {input_key!r}")
        reference = next((record[k] for k in ("answer", "label") if record.get(k) is not None),
                         None)
        prompts.append(ProbePrompt(_messages(record[input_key], where, input_key),
                                   None if reference is None else str(reference)))
    if not prompts:
        raise PromptFileError(f"{path}: prompt file is empty")
    return prompts


def think_open_at_end(prompt_text: str) -> bool:
    """True when the rendered prompt leaves a `<think>` block open for the response."""
    return prompt_text.rfind(THINK_OPEN) > prompt_text.rfind(THINK_CLOSE)


def render_prompts(tokenizer: Any, conversations: Sequence[Sequence[dict[str, str]]]):
    """Apply the chat template (with the generation prompt) and tokenize as OpenRLHF does."""
    if not getattr(tokenizer, "chat_template", None):
        raise GenerationError("its tokenizer has no chat template (set one, e.g. the reasoning "
                              "model's, as RL prompts use it)")
    texts = [tokenizer.apply_chat_template(list(c), add_generation_prompt=True, tokenize=False)
             for c in conversations]
    return texts, [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]


def generate_vllm(
    model_dir: Path, conversations: Sequence[Sequence[dict[str, str]]],
    settings: SamplingSettings, *, dtype: str = "auto", enforce_eager: bool = True,
    engine_args: dict[str, Any] | None = None,
) -> Generation:
    """Start one vLLM engine on `model_dir`, sample, free the engine, return the samples."""
    import vllm
    from transformers import AutoTokenizer
    from vllm.platforms import current_platform

    if current_platform.is_cpu():  # a 1 GiB KV cache and an in-process engine, unless set:
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # starts in seconds, not ~30 s
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    try:
        texts, prompt_ids = render_prompts(tokenizer, conversations)
    except GenerationError as exc:
        raise GenerationError(f"{model_dir}: {exc}") from None
    kwargs: dict[str, Any] = {
        "model": str(model_dir), "dtype": dtype, "enforce_eager": enforce_eager,
        "max_model_len": max(len(p) for p in prompt_ids) + settings.max_tokens,
        "seed": settings.seed, **(engine_args or {}),
    }
    LOG.info("Starting vLLM on %s", model_dir)
    llm = vllm.LLM(**kwargs)
    try:
        params = vllm.SamplingParams(
            n=settings.n, temperature=settings.temperature, top_p=settings.top_p,
            max_tokens=settings.max_tokens,
            skip_special_tokens=False)  # keep `</think>` in the text, as the reward sees it
        outputs = llm.generate([{"prompt_token_ids": ids} for ids in prompt_ids], params,
                               use_tqdm=True)
    finally:
        try:
            llm.llm_engine.engine_core.shutdown()
        except Exception:  # noqa: BLE001 - best effort cleanup, the results are already out
            LOG.debug("vLLM engine shutdown failed", exc_info=True)
        del llm
        gc.collect()
    return Generation(
        samples=[Sample(index, tuple(c.token_ids), c.finish_reason, c.text)
                 for index, out in enumerate(outputs) for c in out.outputs],
        think_close_ids=tokenizer.encode(THINK_CLOSE, add_special_tokens=False),
        think_open_in_prompt=[think_open_at_end(t) for t in texts],
        engine={k: v for k, v in kwargs.items() if k != "model"},
    )
