"""Import hook (loaded from bai_mergekit.pth): adds `bai` to mergekit when mergekit loads.

Imports nothing at start-up but `sys`, and costs one dict lookup per import in processes that
never import mergekit; the plugin is imported only right after the mergekit module it extends
has executed. Plain classes, not importlib.abc: that import alone would cost milliseconds.
"""

import sys

_HOOKS = {
    "mergekit.merge_methods.registry": ("bai_mergekit.plugin", "register", False),
    "mergekit.merge": ("bai_mergekit.plugin", "patch_merge_module", True),
    "mergekit.scripts.run_yaml": ("bai_mergekit.plugin", "patch_run_yaml", True),
}


class _Loader:
    """Delegates to the real loader, then runs our hook on the freshly executed module."""

    def __init__(self, inner, fullname):
        self._inner, self._fullname = inner, fullname

    def create_module(self, spec):
        return self._inner.create_module(spec)

    def exec_module(self, module):
        self._inner.exec_module(module)
        plugin, func, takes_module = _HOOKS[self._fullname]
        try:
            __import__(plugin)
            hook = getattr(sys.modules[plugin], func)
            hook(module) if takes_module else hook()
        except Exception:  # never break mergekit's own import
            import logging

            logging.getLogger("bai_mergekit").warning(
                "could not add merge method 'bai' to mergekit", exc_info=True
            )

    def __getattr__(self, name):
        return getattr(self._inner, name)


class _Finder:
    """A sys.meta_path finder that only answers for the mergekit modules we extend.

    It asks the other finders for the real spec; one of them may in turn ask every finder,
    us included, for the same name: `_busy` (names being resolved, per thread) makes that
    re-entrant call answer None instead of recursing forever.
    """

    def __init__(self):
        self._busy = {}  # thread id -> names this thread is resolving now

    def find_spec(self, fullname, path, target=None):
        if fullname not in _HOOKS:
            return None
        busy = self._busy.setdefault(_thread_id(), set())
        if fullname in busy:
            return None
        busy.add(fullname)
        try:
            for finder in list(sys.meta_path):
                if finder is self or not hasattr(finder, "find_spec"):
                    continue
                spec = finder.find_spec(fullname, path, target)
                if spec is not None:
                    if spec.loader is not None and not isinstance(spec.loader, _Loader):
                        spec.loader = _Loader(spec.loader, fullname)
                    return spec
            return None
        finally:
            busy.discard(fullname)


def _thread_id():
    # `_thread` is built in and already imported by the interpreter: no start-up cost.
    import _thread

    return _thread.get_ident()


if not any(isinstance(f, _Finder) for f in sys.meta_path):
    sys.meta_path.insert(0, _Finder())
