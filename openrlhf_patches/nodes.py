"""Once the driver has joined a multi-node Ray cluster: the model paths exist on every node."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

from .argv import flag_value

logger = logging.getLogger("bai")

# what the actor, critic, reference, reward and vLLM workers load by path on their own node
NODE_PATHS = ("--actor.model_name_or_path", "--critic.model_name_or_path",
              "--reward.model_name_or_path", "--reward.remote_url", "--train.agent_func_path")


def local_paths(argv: Sequence[str]) -> dict[str, str]:
    """{flag: path} for the options of NODE_PATHS that name a local path (not a hub id/URL)."""
    out = {}
    for flag in NODE_PATHS:
        value = flag_value(argv, flag)
        if value and os.path.isabs(value) and "://" not in value:
            out[flag] = value
    return out


def missing_on_nodes(ray: Any, paths: dict[str, str], nodes: list[str]) -> dict[str, list[str]]:
    """{flag: [node ids without that path]}, asking each of `nodes` (Ray node ids)."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    @ray.remote(num_cpus=0)
    def exists(candidates: list[str]) -> list[bool]:
        return [os.path.exists(p) for p in candidates]

    values = list(paths.values())
    answers = ray.get([exists.options(scheduling_strategy=NodeAffinitySchedulingStrategy(
        node, soft=False)).remote(values) for node in nodes], timeout=120)
    missing: dict[str, list[str]] = {}
    for node, found in zip(nodes, answers, strict=True):
        for flag, ok in zip(paths, found, strict=True):
            if not ok:
                missing.setdefault(flag, []).append(node)
    return missing


def check_paths_on_nodes(ray: Any, argv: Sequence[str]) -> None:
    """Exit (2) with one line per model path some node lacks; a multi-node cluster only. A check
    that cannot run is logged and skipped."""
    try:
        paths = local_paths(argv)
        nodes = [n["NodeID"] for n in ray.nodes() if n.get("Alive")] if paths else []
        if len(nodes) < 2:
            return
        missing = missing_on_nodes(ray, paths, nodes)
    except Exception as exc:  # a convenience: never block the launch on it
        logger.warning("bai: model paths not checked on the Ray nodes: %r", exc)
        return
    for flag, nodes in missing.items():
        logger.error("bai: %s %s does not exist on Ray node(s) %s: every node that runs a model "
                     "needs it at the same path (copy it there, or give a hub id)", flag,
                     paths[flag], ", ".join(nodes))
    if missing:
        raise SystemExit(2)
    logger.info("bai: model paths found on every Ray node: %s", ", ".join(paths.values()))
