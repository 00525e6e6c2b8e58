"""Run a callback right after a named module executes (a re-entrancy-safe `sys.meta_path` hook)."""

from __future__ import annotations

import importlib.abc
import logging
import sys
import threading
from collections.abc import Callable
from types import ModuleType

logger = logging.getLogger("bai")

__all__ = ["when_imported", "PostImportFinder"]

Callback = Callable[[ModuleType], None]


class PostImportFinder(importlib.abc.MetaPathFinder):
    """Finds nothing itself: asks the other finders for a watched module and wraps the loader's
    `exec_module` so the callbacks run after the module body.

    A finder that delegates to every other finder recurses forever when another finder does the
    same; `_busy` (per thread) makes a re-entered lookup of the same name return None at once.
    """

    def __init__(self) -> None:
        self.callbacks: dict[str, list[Callback]] = {}
        self._local = threading.local()

    def find_spec(self, fullname, path, target=None):
        if fullname not in self.callbacks:
            return None
        busy = self._local.__dict__.setdefault("busy", set())
        if fullname in busy:
            return None
        busy.add(fullname)
        try:
            for finder in list(sys.meta_path):
                if finder is self or not hasattr(finder, "find_spec"):
                    continue
                spec = finder.find_spec(fullname, path, target)
                if spec is None:
                    continue
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    self._wrap(spec, fullname)
                return spec
            return None
        finally:
            busy.discard(fullname)

    def _wrap(self, spec, fullname: str) -> None:
        exec_module = spec.loader.exec_module

        def _exec_then_patch(module, _exec=exec_module):
            _exec(module)
            run_callbacks(self.callbacks.get(fullname, ()), module)

        spec.loader.exec_module = _exec_then_patch


def run_callbacks(callbacks, module: ModuleType) -> None:
    for callback in list(callbacks):
        try:
            callback(module)
        except Exception as exc:  # a patch must never break the import
            logger.warning("bai: post-import patch of %s failed: %r", module.__name__, exc)


def _finder() -> PostImportFinder:
    for finder in sys.meta_path:
        if isinstance(finder, PostImportFinder):
            return finder
    finder = PostImportFinder()
    sys.meta_path.insert(0, finder)
    return finder


def when_imported(name: str, callback: Callback) -> None:
    """Call `callback(module)` now if `name` is imported, else right after it first executes."""
    module = sys.modules.get(name)
    if module is not None:
        run_callbacks([callback], module)
        return
    finder = _finder()
    callbacks = finder.callbacks.setdefault(name, [])
    if callback not in callbacks:
        callbacks.append(callback)
