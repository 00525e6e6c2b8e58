"""Shared command-line plumbing of the bai tools: one-line errors, tracebacks, paths, JSONL."""

from __future__ import annotations

import os
import traceback
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TypeVar

__all__ = ["TRACEBACK_ENV", "one_line", "traceback_wanted", "out_path_problem",
           "iter_text_lines", "run_guarded"]

TRACEBACK_ENV = "BAI_TRACEBACK"
T = TypeVar("T")


def one_line(prog: str, message: object) -> str:
    """`prog: error: message` on one line."""
    return f"{prog}: error: {' '.join(str(message).splitlines())}"


def traceback_wanted(verbose: bool = False) -> bool:
    """-v/--verbose or BAI_TRACEBACK=1 (any value but "" and "0") shows tracebacks."""
    return verbose or os.environ.get(TRACEBACK_ENV, "").strip() not in ("", "0")


def out_path_problem(path: Path, flag: str, suffixes: Sequence[str] = ()) -> str | None:
    """Why an output path cannot be used (wrong suffix when `suffixes` is given, an existing
    directory, a parent that is a file), or None. Missing parent folders are fine."""
    path = Path(path)
    if path.is_dir():
        return f"{flag} {path}: is a directory; give a file name"
    if suffixes and path.suffix.lower() not in suffixes:
        return (f"{flag} {path}: must end in {' or '.join(suffixes)}, got "
                f"{path.suffix or 'no suffix'!r}")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                return f"{flag} {path}: {parent} is not a directory"
            break
    return None


def iter_text_lines(path: Path, error: type[Exception]) -> Iterator[tuple[str, str]]:
    """(`FILE:LINE`, text) of each non-blank line of a UTF-8 file; `error` names the file and
    line for an unreadable file or bytes that are not UTF-8."""
    try:
        handle = Path(path).open("rb")
    except OSError as exc:
        raise error(f"{path}: cannot read ({exc.strerror})") from None
    with handle:
        for number, raw_line in enumerate(handle, start=1):
            where = f"{path}:{number}"
            try:
                line = raw_line.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as exc:
                raise error(
                    f"{where}: not UTF-8 text (invalid byte 0x{raw_line[exc.start]:02x} at byte "
                    f"{exc.start + 1} of the line)"
                ) from None
            if line.strip():
                yield where, line


def run_guarded(prog: str, fn: Callable[[], T], verbose: bool = False,
                expected: tuple[type[BaseException], ...] = (ValueError, OSError)) -> T:
    """Call `fn()`; any failure becomes one `prog: error: ...` line (SystemExit, status 1).
    `expected` errors print their message; others their type too, and a hint. The traceback
    goes to stderr first with -v/--verbose or BAI_TRACEBACK=1."""
    show = traceback_wanted(verbose)
    try:
        return fn()
    except SystemExit:
        raise
    except KeyboardInterrupt:
        raise SystemExit(one_line(prog, "interrupted")) from None
    except expected as exc:
        if show:
            traceback.print_exc()
        raise SystemExit(one_line(prog, exc)) from None
    except Exception as exc:  # noqa: BLE001 - e.g. vLLM failing: one line, traceback on request
        if show:
            traceback.print_exc()
        hint = "" if show else f" (-v or {TRACEBACK_ENV}=1 shows the traceback)"
        raise SystemExit(one_line(prog, f"{type(exc).__name__}: {exc}{hint}")) from None
