"""Load probe prompts (JSONL: `prompt` plus an optional reference `answer` or `label`)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from bai_tools.cli_util import iter_text_lines

REFERENCE_KEYS = ("answer", "label")


class PromptFileError(ValueError):
    """A prompt file that is missing, empty or malformed; the message names file and line."""


@dataclass(frozen=True)
class ProbePrompt:
    """One probe prompt: chat messages and, when known, the reference answer."""

    messages: tuple[dict[str, str], ...]
    reference: str | None = None


def default_prompts_path() -> Path:
    """Path of the math prompt set shipped with the package."""
    return Path(str(resources.files("bai_tools") / "data" / "default_prompts.jsonl"))


def _messages(value: object, where: str, key: str) -> tuple[dict[str, str], ...]:
    if isinstance(value, str):
        if not value.strip():
            raise PromptFileError(f"{where}: field {key!r} is empty")
        return ({"role": "user", "content": value},)
    if isinstance(value, list) and value:
        ok = all(
            isinstance(m, dict)
            and isinstance(m.get("role"), str)
            and isinstance(m.get("content"), str)
            for m in value
        )
        if ok:
            return tuple({"role": m["role"], "content": m["content"]} for m in value)
    raise PromptFileError(
        f"{where}: field {key!r} must be a non-empty string or a list of "
        "{'role', 'content'} messages"
    )


def load_prompts(path: Path, input_key: str = "prompt") -> list[ProbePrompt]:
    """Read a JSONL prompt file; raise PromptFileError naming the file (and line) on problems."""
    path = Path(path)
    if not path.is_file():
        raise PromptFileError(f"{path}: prompt file not found")
    prompts: list[ProbePrompt] = []
    for where, line in iter_text_lines(path, PromptFileError):
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise PromptFileError(f"{where}: invalid JSON ({exc.msg})") from None
        if not isinstance(record, dict):
            raise PromptFileError(f"{where}: expected a JSON object")
        if input_key not in record:
            raise PromptFileError(f"{where}: missing field {input_key!r}")
        reference = next(
            (record[k] for k in REFERENCE_KEYS if record.get(k) is not None), None
        )
        prompts.append(
            ProbePrompt(
                messages=_messages(record[input_key], where, input_key),
                reference=None if reference is None else str(reference),
            )
        )
    if not prompts:
        raise PromptFileError(f"{path}: prompt file is empty")
    return prompts
