"""Wires `bai` into mergekit: registers the method and makes bai merges atomic and checked."""

from __future__ import annotations

import contextvars
import functools
import logging
import os
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

LOG = logging.getLogger(__name__)
# The config file mergekit-yaml was given, so the output can never replace it.
CONFIG_FILE: contextvars.ContextVar[str | None] = contextvars.ContextVar("bai_config_file",
                                                                        default=None)


def register() -> None:
    """Register `bai` in mergekit's registry (idempotent).

    Importing bai_mergekit.method registers it; when that import is what is loading
    mergekit right now, the module is still partial and registers itself once complete.
    """
    from bai_mergekit import method

    if hasattr(method, "ensure_registered"):
        method.ensure_registered()


def run_bai_merge(run_merge: Callable[..., Any], merge_config, out_path: str, *args, **kwargs):
    """Pre-flight, merge into a hidden temp dir, fix config and card, then rename into place."""
    from bai_mergekit.card import card_section
    from bai_mergekit.finalize import write_card, write_config
    from bai_mergekit.output import atomic_directory, check_output_location
    from bai_mergekit.preflight import preflight

    options = kwargs.get("options", args[0] if args else None)
    plan = preflight(merge_config, kwargs.get("config_source"))
    protected = plan.local_inputs()
    if CONFIG_FILE.get():
        protected.append(("config file", CONFIG_FILE.get()))
    check_output_location(out_path, protected)
    cache_dir = getattr(options, "transformers_cache", None)
    # run_merge consumes merge_config (it clears `models`): read what we need first.
    section = card_section(merge_config, plan)
    own_tokenizer = merge_config.tokenizer is None and merge_config.tokenizer_source is None
    copy_tokenizer = own_tokenizer and not merge_config.chat_template
    final = Path(out_path)
    with atomic_directory(final) as tmp:
        run_merge(merge_config, str(tmp), *args, **kwargs)
        write_config(tmp, plan, cache_dir, copy_tokenizer=copy_tokenizer)
        write_card(tmp, os.path.basename(os.path.abspath(final)), section)
    LOG.info("bai merge written to %s", final)


def wrap_run_merge(run_merge: Callable[..., Any]) -> Callable[..., Any]:
    """Route `merge_method: bai` through run_bai_merge; other methods are untouched."""
    if getattr(run_merge, "__bai_wrapped__", False):
        return run_merge

    @functools.wraps(run_merge)
    def wrapper(merge_config, out_path, *args, **kwargs):
        if getattr(merge_config, "merge_method", None) != "bai":
            return run_merge(merge_config, out_path, *args, **kwargs)
        return run_bai_merge(run_merge, merge_config, out_path, *args, **kwargs)

    wrapper.__bai_wrapped__ = True
    return wrapper


def run_yaml_guarded(callback: Callable[..., Any], *args, **kwargs) -> Any:
    """mergekit-yaml with a bai config: strict recipe, one `Error:` line, signals cleaned up.

    Configs of other methods go to mergekit untouched, except that an unreadable file or YAML
    that is not a mapping is reported in one line too (the method cannot be known then).
    """
    from bai_mergekit.cli import cli_errors
    from bai_mergekit.errors import BaiMergeError
    from bai_mergekit.recipe import is_bai_mapping, load_mapping, parse_recipe_text

    config_file = kwargs.get("config_file")
    verbose = bool(kwargs.get("verbosity"))
    with cli_errors(verbose):
        try:
            with open(config_file, encoding="utf-8") as handle:
                text = handle.read()
        except (OSError, UnicodeDecodeError) as error:
            raise BaiMergeError(f"cannot read config file {config_file}: {error}") from None
        origin = f"config file {config_file}"
        data = load_mapping(text, origin, unique_keys=False)
        if "merge_method" not in data:
            raise BaiMergeError(f"{origin} has no `merge_method:` (e.g. merge_method: bai)")
    if not is_bai_mapping(data):
        return callback(*args, **kwargs)
    with cli_errors(verbose):
        parse_recipe_text(text, origin)
        token = CONFIG_FILE.set(os.path.abspath(config_file))
        try:
            return callback(*args, **kwargs)
        finally:
            CONFIG_FILE.reset(token)


def patch_run_yaml(module: ModuleType) -> None:
    """Called when `mergekit.scripts.run_yaml` has loaded: guard its click command."""
    command = module.main
    if getattr(command.callback, "__bai_wrapped__", False):
        return
    callback = command.callback

    @functools.wraps(callback)
    def guarded(*args, **kwargs):
        return run_yaml_guarded(callback, *args, **kwargs)

    guarded.__bai_wrapped__ = True
    command.callback = guarded


def patch_merge_module(module: ModuleType) -> None:
    """Called when `mergekit.merge` has loaded, before run_yaml/multimerge import run_merge."""
    module.run_merge = wrap_run_merge(module.run_merge)


def install() -> None:
    """Explicit activation for processes started without the .pth hook (e.g. `python -S`)."""
    import mergekit.merge
    import mergekit.scripts.run_yaml

    register()
    patch_merge_module(mergekit.merge)
    patch_run_yaml(mergekit.scripts.run_yaml)
