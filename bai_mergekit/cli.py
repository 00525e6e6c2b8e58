"""CLI guard shared by mergekit-yaml (bai) and bai-sweep: one `Error:` line, signals as errors."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
import traceback
from collections.abc import Iterator

from bai_mergekit.errors import BaiMergeError

LOG = logging.getLogger(__name__)
TRACEBACK_ENV = "BAI_TRACEBACK"
MAX_MESSAGE = 400
RECEIVED: list[int] = []  # signals caught by signals_as_errors in this process


_DEFER = [0]  # > 0 while a section that must not be cut short runs


def pending_signal() -> int | None:
    """The first SIGTERM/SIGINT caught so far (output code checks it before publishing)."""
    return RECEIVED[0] if RECEIVED else None


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """Inside, a caught signal is only recorded (pending_signal); the caller checks after."""
    _DEFER[0] += 1
    try:
        yield
    finally:
        _DEFER[0] -= 1


class Interrupted(BaiMergeError):
    """SIGTERM or SIGINT during a merge: cleaned up like any failure, exit 128 + signal."""


def want_traceback(verbose: bool = False) -> bool:
    """Tracebacks only with -v/--verbose or BAI_TRACEBACK=1."""
    return verbose or os.environ.get(TRACEBACK_ENV, "") not in ("", "0")


def one_line(error: BaseException) -> str:
    """`Type: first words of the message`, on one line and bounded in length."""
    text = " ".join(str(error).split()) or "(no message)"
    if len(text) > MAX_MESSAGE:
        text = text[: MAX_MESSAGE - 3] + "..."
    name = type(error).__name__
    return text if isinstance(error, BaiMergeError) else f"{name}: {text}"


def _interrupted(signum: int) -> Interrupted:
    name = signal.Signals(signum).name
    return Interrupted(f"interrupted by {name}; partial output removed", 128 + signum)


@contextlib.contextmanager
def signals_as_errors(received: list[int] | None = None) -> Iterator[None]:
    """Turn SIGTERM/SIGINT into an Interrupted exception (so cleanup runs), then restore.

    The signal number is also appended to `received`: library code on the way up may wrap
    the exception in its own (transformers does), and the caller must still report a signal.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, signal.SIG_IGN)  # a second signal must not break the cleanup
        RECEIVED.append(signum)
        if received is not None:
            received.append(signum)
        if not _DEFER[0]:
            raise _interrupted(signum)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


@contextlib.contextmanager
def cli_errors(verbose: bool = False) -> Iterator[None]:
    """Every failure inside becomes one `Error: ...` line (via click) with a non-zero exit."""
    received: list[int] = []
    RECEIVED.clear()
    try:
        with signals_as_errors(received):
            yield
    except (Exception, KeyboardInterrupt) as error:
        if want_traceback(verbose):
            traceback.print_exc(file=sys.stderr)
        if received:
            raise _interrupted(received[0]) from None
        if isinstance(error, BaiMergeError):
            raise
        raise BaiMergeError(
            f"{one_line(error)} (for the traceback: -v or {TRACEBACK_ENV}=1)"
        ) from None
    if received:  # swallowed on the way up by library code: still a failure
        raise _interrupted(received[0])
