"""Toy-world fixtures: the small family, built once and cached by its recipe hash."""

from __future__ import annotations

import time

import pytest


@pytest.fixture(scope="session")
def small_family():
    """The small family from the user cache (~/.cache/bai/toy-world/<hash>, or
    $BAI_TOY_WORLD_CACHE): the first session trains it, later ones reuse it."""
    from filelock import FileLock

    from bai_demo.toy_world import SMALL, build_family, cache_root

    start = time.monotonic()
    cache_root().mkdir(parents=True, exist_ok=True)
    with FileLock(str(cache_root() / f".{SMALL.key}.lock")):  # one build for all xdist workers
        family = build_family(SMALL)
    print(f"small toy world ready in {time.monotonic() - start:.0f} s: {family.root}")
    return family
