"""Import hook (loaded from bai.pth): extends mergekit and OpenRLHF right after they load.

The one post-import mechanism of bai: a `sys.meta_path` finder that answers only for the module
names it watches and runs their callbacks after the module body has executed. Watched from the
start: mergekit's registry, merge and run_yaml modules (the `bai` merge method) and the
`openrlhf` package (the BAI training hooks, `openrlhf_patches.activate`); code can watch more
with `when_imported`. Imports nothing at start-up but `sys`, and costs one dict lookup per
import in processes that never import those packages. Plain classes, not importlib.abc: that
import alone would cost milliseconds.
"""

import sys

# module -> callbacks: a callable(module), or ("plugin.module", "function", takes_module)
_CALLBACKS = {
    "mergekit.merge_methods.registry": [("bai_mergekit.plugin", "register", False)],
    "mergekit.merge": [("bai_mergekit.plugin", "patch_merge_module", True)],
    "mergekit.scripts.run_yaml": [("bai_mergekit.plugin", "patch_run_yaml", True)],
    "openrlhf": [("openrlhf_patches.activate", "on_openrlhf", True)],
}


def _run(callbacks, module):
    for callback in list(callbacks):
        try:
            if isinstance(callback, tuple):
                plugin, func, takes_module = callback
                __import__(plugin)
                hook = getattr(sys.modules[plugin], func)
                hook(module) if takes_module else hook()
            else:
                callback(module)
        except Exception:  # never break the extended package's own import
            import logging

            logging.getLogger("bai").warning("bai: post-import hook of %s failed",
                                             module.__name__, exc_info=True)


class _Loader:
    """Delegates to the real loader, then runs the callbacks on the freshly executed module."""

    def __init__(self, inner, fullname):
        self._inner, self._fullname = inner, fullname

    def create_module(self, spec):
        return self._inner.create_module(spec)

    def exec_module(self, module):
        self._inner.exec_module(module)
        _run(_CALLBACKS.get(self._fullname, ()), module)

    def __getattr__(self, name):
        return getattr(self._inner, name)


class _Finder:
    """A sys.meta_path finder that only answers for the watched module names.

    It asks the other finders for the real spec; one of them may in turn ask every finder,
    us included, for the same name: `_busy` (names being resolved, per thread) makes that
    re-entrant call answer None instead of recursing forever.
    """

    def __init__(self):
        self._busy = {}  # thread id -> names this thread is resolving now

    def find_spec(self, fullname, path, target=None):
        if fullname not in _CALLBACKS:
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


def when_imported(name, callback):
    """Call `callback(module)` now if `name` is imported, else right after it first executes
    (once per callback; a failing callback is logged and never breaks the import)."""
    module = sys.modules.get(name)
    if module is not None:
        _run([callback], module)
        return
    callbacks = _CALLBACKS.setdefault(name, [])
    if callback not in callbacks:
        callbacks.append(callback)


if not any(type(f).__name__ == "_Finder" and type(f).__module__ == __name__
           for f in sys.meta_path):
    sys.meta_path.insert(0, _Finder())
