"""Import hook (loaded from bai.pth): extends mergekit and OpenRLHF right after they load.

The one post-import mechanism of bai: a `sys.meta_path` finder that answers only for the module
names it watches (mergekit's registry, merge and run_yaml modules for the `bai` merge method,
the `openrlhf` package for the training hooks, Ray's usage library for the CPU smoke mode,
bitsandbytes' CPU backend for a narrow log filter (bai_core.quiet), and what `when_imported`
adds) and runs their callbacks after the module body has executed. Imports
nothing at start-up but `sys` (a benchmark measures it): plain classes, not importlib.abc, whose
import alone costs milliseconds.
"""

import sys

# module -> callbacks: a callable(module), or ("plugin.module", "function", takes_module)
_CALLBACKS = {
    "mergekit.merge_methods.registry": [("bai_mergekit.plugin", "register", False)],
    "mergekit.merge": [("bai_mergekit.plugin", "patch_merge_module", True)],
    "mergekit.scripts.run_yaml": [("bai_mergekit.plugin", "patch_run_yaml", True)],
    "openrlhf": [("openrlhf_patches.activate", "on_openrlhf", True)],
    # Ray's API server probes cloud metadata servers: not in the CPU smoke mode (ray_offline)
    "ray._common.usage.usage_lib": [("openrlhf_patches.ray_offline", "patch_usage_lib", True)],
    # bitsandbytes' CPU package body is empty: its ops module, which logs, loads right after
    "bitsandbytes.backends.cpu": [("bai_core.quiet", "quiet_bitsandbytes", True)],
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

    def exec_module(self, module):
        self._inner.exec_module(module)
        _run(_CALLBACKS.get(self._fullname, ()), module)

    def __getattr__(self, name):
        return getattr(self._inner, name)


class _Finder:
    """Answers only for the watched names, asking the other finders for the real spec; one of
    them may in turn ask every finder, us included, for the same name: `_busy` ((thread id,
    name) pairs being resolved) makes that re-entrant call answer None, not recurse forever."""

    def __init__(self):
        self._busy = set()

    def find_spec(self, fullname, path, target=None):
        if fullname not in _CALLBACKS:
            return None
        import _thread  # built in and already imported: no start-up cost

        key = (_thread.get_ident(), fullname)
        if key in self._busy:
            return None
        self._busy.add(key)
        try:
            others = [f for f in sys.meta_path if f is not self and hasattr(f, "find_spec")]
            for finder in others:
                spec = finder.find_spec(fullname, path, target)
                if spec is not None:
                    if spec.loader is not None and not isinstance(spec.loader, _Loader):
                        spec.loader = _Loader(spec.loader, fullname)
                    return spec
            return None
        finally:
            self._busy.discard(key)


def when_imported(name, callback):
    """Call `callback(module)` now if `name` is imported, else right after it first executes
    (once per callback; a failing callback is logged and never breaks the import)."""
    module = sys.modules.get(name)
    if module is not None:
        _run([callback], module)
    elif callback not in _CALLBACKS.setdefault(name, []):
        _CALLBACKS[name].append(callback)


if not any(type(f).__name__ == "_Finder" and type(f).__module__ == __name__ for f in sys.meta_path):
    sys.meta_path.insert(0, _Finder())
