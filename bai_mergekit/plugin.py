"""Wires `bai` into mergekit: registers the method and makes bai merges atomic and checked.

Inside stock `mergekit-yaml` (mergekit's own click CLI) our failures are shown the way that
CLI shows errors, `Error: message`, with the error's exit status: the plugin follows its
host's convention there, where our own tools print `prog: error: message` (bai_core.cli).
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import logging
import os
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

LOG = logging.getLogger(__name__)
# Set while `mergekit-yaml` runs a bai config: (the config file, its recipe parsed strictly),
# so the merge reads the recipe once and its output never replaces the config file.
GUARD: contextvars.ContextVar[tuple[str, Any] | None] = contextvars.ContextVar(
    "bai_mergekit_yaml", default=None)


def register() -> None:
    """Register `bai` (idempotent); when importing bai_mergekit.method is what loads mergekit
    right now, that module is still partial and registers itself once complete."""
    from bai_mergekit import method

    if hasattr(method, "ensure_registered"):
        method.ensure_registered()


def run_bai_merge(run_merge: Callable[..., Any], merge_config, out_path: str, *args, **kwargs):
    """Pre-flight, merge into a hidden temp dir, finish config/tokenizer/card, then rename."""
    from bai_mergekit.identity import local_inputs
    from bai_mergekit.output import atomic_directory, check_output_location, finish_output
    from bai_mergekit.preflight import preflight
    from bai_mergekit.recipe import parse_recipe_text
    from bai_mergekit.writer import streaming

    options = kwargs.get("options", args[0] if args else None)
    guard = GUARD.get()
    recipe = guard[1] if guard else parse_recipe_text(
        kwargs.get("config_source") or merge_config.to_yaml())
    plan = preflight(merge_config, recipe)
    check_output_location(out_path, local_inputs(recipe) + (
        [("config file", guard[0])] if guard else []))
    if plan.tokenizer is not None:  # rows merged by id: mergekit must not re-align them
        merge_config = merge_config.model_copy(
            update={"tokenizer": None, "tokenizer_source": None, "chat_template": None})
    with atomic_directory(out_path) as tmp:
        with streaming(header_reserve(plan)):
            run_merge(merge_config, str(tmp), *args, **kwargs)
        finish_output(tmp, os.path.basename(os.path.abspath(out_path)), plan,
                      cache_dir=getattr(options, "transformers_cache", None),
                      copy_tokenizer=getattr(options, "copy_tokenizer", True))
    LOG.info("bai merge written to %s", Path(out_path))


def header_reserve(plan: Any) -> int:
    """Room for the safetensors header of any output shard: every tensor of the base (names,
    shapes, the longest dtype string), plus slack for shapes or tensors the base lacks; 1 MiB
    when the base's tensors are not known (hub model, *.bin). A larger header still works:
    its shard is rewritten once (safetensors_stream.TensorStream)."""
    from bai_mergekit.safetensors_stream import TensorSpec, header_bound

    table = plan.tensors[0] if plan.tensors else None
    if table is None:
        return 1 << 20
    import torch

    return header_bound([TensorSpec(name, shape, torch.bfloat16)
                         for name, (shape, _) in table.items()]) + 4096


def click_error(error: BaseException):
    """`error` as a click.ClickException (shown as `Error: ...`), keeping its exit status."""
    import click

    from bai_core.cli import MAX_MESSAGE, BaiError
    from bai_core.constants import TRACEBACK_ENV

    text = str(error) if isinstance(error, BaiError) else (
        f"{type(error).__name__}: {error} (for the traceback: -v or {TRACEBACK_ENV}=1)")
    text = " ".join(text.split()) or "(no message)"
    exc = click.ClickException(text if len(text) <= MAX_MESSAGE else text[:MAX_MESSAGE - 3] + "...")
    exc.exit_code = getattr(error, "exit_code", 1)
    return exc


@contextlib.contextmanager
def click_errors(verbose: bool = False) -> Iterator[None]:
    """Inside mergekit's click CLI: every failure (signals included) becomes one click error."""
    import click

    from bai_core.cli import traceback_wanted
    from bai_mergekit.output import merge_signals

    try:
        with merge_signals():
            yield
    except click.ClickException:
        raise
    except (Exception, KeyboardInterrupt) as error:
        if traceback_wanted(verbose):
            traceback.print_exc()
        raise click_error(error) from None


def wrap_run_merge(run_merge: Callable[..., Any]) -> Callable[..., Any]:
    """Route `merge_method: bai` through run_bai_merge; other methods are untouched."""
    if getattr(run_merge, "__bai_wrapped__", False):
        return run_merge

    @functools.wraps(run_merge)
    def wrapper(merge_config, out_path, *args, **kwargs):
        if getattr(merge_config, "merge_method", None) != "bai":
            return run_merge(merge_config, out_path, *args, **kwargs)
        import click

        from bai_core.cli import BaiError

        try:
            return run_bai_merge(run_merge, merge_config, out_path, *args, **kwargs)
        except BaiError as error:  # mergekit-multi (click): one `Error:` line; Python: raised
            if GUARD.get() is not None or click.get_current_context(silent=True) is None:
                raise
            raise click_error(error) from None

    wrapper.__bai_wrapped__ = True
    return wrapper


def patch_run_yaml(module: ModuleType) -> None:
    """Called when `mergekit.scripts.run_yaml` has loaded: a bai config gets the strict recipe,
    one `Error:` line and signals cleaned up. Other configs go to mergekit untouched, but an
    unreadable file or YAML that is not a mapping is one line too (no method is known then)."""
    from bai_mergekit.recipe import bai_recipe_or_none, read_text

    callback = module.main.callback
    if getattr(callback, "__bai_wrapped__", False):
        return

    @functools.wraps(callback)
    def guarded(*args, **kwargs):
        config_file = kwargs.get("config_file")
        verbose = bool(kwargs.get("verbosity"))
        with click_errors(verbose):
            recipe = bai_recipe_or_none(*read_text(config_file, "config file"))
        if recipe is None:
            return callback(*args, **kwargs)
        with click_errors(verbose):
            token = GUARD.set((os.path.abspath(config_file), recipe))
            try:
                return callback(*args, **kwargs)
            finally:
                GUARD.reset(token)

    guarded.__bai_wrapped__ = True
    module.main.callback = guarded


def quiet_out_config(out_config: Callable[..., Any]) -> Callable[..., Any]:
    """mergekit's `_model_out_config` without transformers' `torch_dtype` line (bai_core.quiet)."""
    if getattr(out_config, "__bai_wrapped__", False):
        return out_config
    from bai_core.quiet import quiet_torch_dtype

    @functools.wraps(out_config)
    def wrapper(*args, **kwargs):
        with quiet_torch_dtype():
            return out_config(*args, **kwargs)

    wrapper.__bai_wrapped__ = True
    return wrapper


def patch_merge_module(module: ModuleType) -> None:
    """Called when `mergekit.merge` has loaded, before run_yaml/multimerge import run_merge."""
    module.run_merge = wrap_run_merge(module.run_merge)
    if hasattr(module, "_model_out_config"):
        module._model_out_config = quiet_out_config(module._model_out_config)


def install() -> None:
    """Explicit activation for processes started without the .pth hook (e.g. `python -S`)."""
    import mergekit.merge
    import mergekit.scripts.run_yaml

    register()
    patch_merge_module(mergekit.merge)
    patch_run_yaml(mergekit.scripts.run_yaml)
