"""Reward models and critics of OpenRLHF 0.11.2 with their `mean` / `std` buffers restored.

`get_llm_for_sequence_regression` registers `mean` (0) and `std` (1) as non-persistent buffers,
set from `config.mean` / `config.std` when the config has them. With transformers 5.15 the
meta-device loading replaces their storage after that, so they hold whatever memory was there:
with `--reward.normalize_enable` every reward and value is `(raw - garbage) / garbage`, often
inf or NaN from the first step (upstream: OpenRLHF pull request 1343, open). After each load
they are set again as OpenRLHF means them: from the config, else 0 / 1.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from .activate import wrap

LOG = logging.getLogger("bai")
MODULES = ("openrlhf.models", "openrlhf.models.model")
FUNCTION = "get_llm_for_sequence_regression"


def restore_buffers(model: Any) -> int:
    """Set the `mean` / `std` buffers of every OpenRLHF reward or critic module in `model`
    (a PEFT wrapper included) from its config, else 0 / 1; returns how many were set."""
    count = 0
    for module in model.modules():
        buffers = dict(module.named_buffers(recurse=False))
        if not {"mean", "std"} <= set(buffers) or not hasattr(module, "normalize_reward"):
            continue
        config = getattr(module, "config", None)
        mean, std = float(getattr(config, "mean", 0.0)), float(getattr(config, "std", 1.0))
        if not (math.isfinite(mean) and math.isfinite(std) and std > 0):
            LOG.warning("bai: config mean/std of %s are %r / %r: using 0 / 1",
                        type(module).__name__, mean, std)
            mean, std = 0.0, 1.0
        buffers["mean"].fill_(mean)
        buffers["std"].fill_(std)
        count += 1
    return count


def _load(original: Any, *args: Any, **kwargs: Any) -> Any:
    model = original(*args, **kwargs)
    try:
        restore_buffers(model)
    except Exception as exc:  # never break OpenRLHF's model loading
        LOG.warning("bai: reward normalization buffers not restored: %r", exc)
    return model


def patch(module: Any) -> None:
    """bai_autoload's callback for `openrlhf.models` (and its `model` module), idempotent."""
    if hasattr(module, FUNCTION):
        wrap(module, FUNCTION, _load)
