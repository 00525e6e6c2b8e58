"""Append-only JSONL writer for per-step metric rows (non-finite floats become null)."""

from __future__ import annotations

import json
import math
import os
from typing import Any

__all__ = ["append_row", "read_rows"]


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def append_row(path: str, row: dict[str, Any]) -> None:
    """Append one JSON object as a line; creates the parent folder; flushed on return."""
    parent = os.path.dirname(path)
    if parent:
        os.makedirs(parent, exist_ok=True)
    line = json.dumps({k: _clean(v) for k, v in row.items()}, allow_nan=False)
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(line + "\n")


def read_rows(path: str) -> list[dict[str, Any]]:
    """All rows of a JSONL file, skipping blank or truncated lines."""
    rows = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            line = line.strip()
            if not line:
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return rows
