"""The merge's failures: BaiMergeError (one line), and SIGTERM/SIGINT turned into one."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

from bai_core.cli import BaiError

SIGNALS = (signal.SIGTERM, signal.SIGINT)
RECEIVED: list[int] = []  # signals caught by merge_signals in this process
_DEFER = [0]  # > 0 while a section that must not be cut short runs


class BaiMergeError(BaiError, ValueError):
    """Bad BAI merge input; raised before or during a merge, never leaves complete output."""


class Interrupted(BaiMergeError):
    """SIGTERM or SIGINT during a merge: cleaned up like any failure, exit 128 + signal."""


def interrupted(signum: int) -> Interrupted:
    name = signal.Signals(signum).name
    return Interrupted(f"interrupted by {name}; partial output removed", 128 + signum)


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


@contextlib.contextmanager
def merge_signals() -> Iterator[None]:
    """SIGTERM/SIGINT inside become Interrupted (so cleanup runs), then the handlers return.

    A signal is reported as Interrupted even when library code on the way up wraps the
    exception in its own (transformers does) or swallows it.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        for sig in SIGNALS:
            signal.signal(sig, signal.SIG_IGN)  # a second signal must not break the cleanup
        RECEIVED.append(signum)
        if not _DEFER[0]:
            raise interrupted(signum)

    RECEIVED.clear()
    previous = {sig: signal.signal(sig, handler) for sig in SIGNALS}
    try:
        yield
    except (Exception, KeyboardInterrupt):
        if RECEIVED:
            raise interrupted(RECEIVED[0]) from None
        raise
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
    if RECEIVED:
        raise interrupted(RECEIVED[0])
