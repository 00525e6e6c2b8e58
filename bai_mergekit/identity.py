"""Model identity: what a recipe's model reference points at, a real path or a hub id."""

from __future__ import annotations

import os

from bai_core.merge_math import BaiMergeError
from bai_mergekit.recipe import Recipe

TOKENIZER_WORDS = ("base", "union")  # mergekit's tokenizer sources that are not models


def model_path(ref: str) -> str:
    """The model part of a mergekit reference (`model+lora`, `model@revision`)."""
    path = ref.split("+", 1)[0]
    if not os.path.exists(path) and "@" in path:
        path = path.rsplit("@", 1)[0]
    return path


def looks_local(path: str) -> bool:
    """Hub ids are `name` or `org/name`; anything else is meant as a filesystem path."""
    return (path.startswith(("/", ".", "~")) or path.endswith(("/", os.sep)) or "\\" in path
            or path.count("/") >= 2 or os.sep != "/" and os.sep in path)


def resolve(ref: str) -> tuple[str, str]:
    """("path", real path with symlinks followed) or ("hub", lower-cased hub id); a path-like
    reference that does not exist is refused, so it is never tried as a hub id."""
    path = model_path(ref)
    expanded = os.path.expanduser(path)
    if os.path.exists(expanded):
        return "path", os.path.realpath(expanded)
    if looks_local(path):
        raise BaiMergeError(f"model path not found: {path} (resolved to "
                            f"{os.path.abspath(expanded)})")
    return "hub", path.lower()


def identity(ref: str) -> str:
    """What a reference points at, for comparisons: `path:<real path>` or `hub:<id>` (+ rest)."""
    kind, where = resolve(ref)
    return f"{kind}:{where}{ref[len(model_path(ref)):]}"


def check_identities(recipe: Recipe) -> dict[str, str]:
    """Resolve every model; refuse the base listed again or a model listed twice, by identity."""
    ids = {recipe.base: identity(recipe.base)}
    seen: dict[str, str] = {}
    for ref in recipe.models:
        ident = ids[ref] = identity(ref)
        if ident == ids[recipe.base]:
            raise BaiMergeError(f"{ref} is both base_model and in models (as {recipe.base}, "
                                f"both {ident.split(':', 1)[1]}): list it once, as base")
        if ident in seen:
            raise BaiMergeError(f"model listed twice under `models:`: {seen[ident]} and {ref} "
                                f"are both {ident.split(':', 1)[1]}")
        seen[ident] = ref
    for extra in (recipe.config_source, recipe.tokenizer_source):
        if extra is not None and extra not in TOKENIZER_WORDS and extra not in ids:
            ids[extra] = identity(extra)
    if recipe.config_source is not None and ids.get(recipe.config_source) not in {
            ids[r] for r in (recipe.base, *recipe.models)}:
        raise BaiMergeError(
            f"config_source {recipe.config_source!r} is not one of the merged models")
    return ids


def local_inputs(recipe: Recipe) -> list[tuple[str, str]]:
    """(what, folder) of every local input, tokenizer source included: outputs never touch them."""
    refs = [recipe.base, *recipe.models]
    if recipe.tokenizer_source not in (None, *TOKENIZER_WORDS):
        refs.append(recipe.tokenizer_source)
    found = [(f"input model {ref}", *resolve(ref)) for ref in refs]
    return [(what, where) for what, kind, where in found if kind == "path"]
