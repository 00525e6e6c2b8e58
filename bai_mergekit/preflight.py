"""Checks a `bai` merge config before any tensor is read: one clear error per bad input."""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import yaml
from mergekit.common import ModelReference
from mergekit.config import ConditionalParameter, MergeConfiguration

from bai_mergekit.errors import BaiMergeError
from bai_mergekit.formula import check_base_weight

LOG = logging.getLogger(__name__)

# Config fields that must agree for a weight-space merge to be meaningful.
FAMILY_FIELDS = (
    "model_type",
    "architectures",
    "hidden_size",
    "num_hidden_layers",
    "intermediate_size",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
)
CONTEXT_FIELD = "max_position_embeddings"


@dataclass(frozen=True)
class MergePlan:
    """What the pre-flight decided: the base, the other models and the config source."""

    base: ModelReference
    others: tuple[ModelReference, ...]
    config_source: ModelReference
    config_reason: str


class _UniqueKeyLoader(yaml.SafeLoader):
    """A YAML loader that refuses duplicate keys (e.g. two `base_model:` lines)."""


def _construct_unique_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode, deep=False):
    seen: dict[Any, Any] = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=deep)
        value = loader.construct_object(value_node, deep=deep)
        if key in seen:
            raise BaiMergeError(
                f"{key!r} is given twice in the config ({seen[key]!r} and {value!r})"
            )
        seen[key] = value
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_unique_mapping
)


def check_yaml_source(config_source: str) -> None:
    """Refuse duplicate keys, which plain YAML loading silently resolves to the last one."""
    yaml.load(config_source, Loader=_UniqueKeyLoader)  # noqa: S506 - SafeLoader subclass


def _numbers(setting: Any) -> Iterator[Any]:
    """Every scalar in a mergekit parameter setting (scalars, gradients, filtered lists)."""
    if isinstance(setting, ConditionalParameter):
        yield from _numbers(setting.value)
    elif isinstance(setting, dict) and "value" in setting:
        yield from _numbers(setting["value"])
    elif isinstance(setting, list):
        for item in setting:
            yield from _numbers(item)
    else:
        yield setting


def check_parameters(config: MergeConfiguration) -> None:
    """Range-check base_weight and every weight; gradients interpolate between checked ends."""
    params = config.parameters or {}
    for value in _numbers(params.get("base_weight", 0.5)):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise BaiMergeError(f"base_weight must be a number in [0, 1], got {value!r}")
        check_base_weight(value)
    scalar_weights = []
    for model in config.models or []:
        setting = (model.parameters or {}).get("weight", params.get("weight", 1.0))
        values = list(_numbers(setting))
        for value in values:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise BaiMergeError(f"weight of {model.model} must be a number, got {value!r}")
            if not math.isfinite(value) or value < 0:
                raise BaiMergeError(f"weight of {model.model} must be >= 0, got {value!r}")
        if len(values) == 1:
            scalar_weights.append(values[0])
    normalize = params.get("normalize", True)
    if normalize and scalar_weights and len(scalar_weights) == len(config.models or []):
        if sum(scalar_weights) == 0:
            raise BaiMergeError(f"weights must not all be zero, got {scalar_weights}")


def _looks_local(path: str) -> bool:
    """Hub ids are `name` or `org/name`; anything else is meant as a filesystem path."""
    return path.startswith(("/", ".", "~")) or path.count("/") >= 2


def check_model_paths(models: list[ModelReference]) -> None:
    """A local path must exist and hold a config; hub ids are left to mergekit to fetch."""
    for ref in models:
        path = ref.model.path
        if os.path.isdir(path):
            if not os.path.isfile(os.path.join(path, "config.json")):
                raise BaiMergeError(f"model directory has no config.json: {path}")
        elif os.path.exists(path) or _looks_local(path):
            raise BaiMergeError(f"model path not found: {path}")


def _config_dict(ref: ModelReference) -> dict[str, Any]:
    try:
        return ref.config().to_dict()
    except Exception as error:  # transformers raises many types here
        raise BaiMergeError(f"cannot load the config of {ref}: {error}") from None


def check_family(configs: dict[ModelReference, dict[str, Any]], base: ModelReference) -> None:
    """All models must share the base's architecture and shapes (one pretrained family)."""
    ref_cfg = configs[base]
    for ref, cfg in configs.items():
        for field in FAMILY_FIELDS:
            if cfg.get(field) != ref_cfg.get(field):
                raise BaiMergeError(
                    f"{ref} is not of the base's family: {field} = {cfg.get(field)!r}, "
                    f"base {base} has {ref_cfg.get(field)!r}"
                )


def _vocab(ref: ModelReference) -> dict[str, int] | None:
    path = ref.model.path
    tok_file = os.path.join(path, "tokenizer.json")
    if not os.path.isfile(tok_file):
        return None
    from tokenizers import Tokenizer

    return Tokenizer.from_file(tok_file).get_vocab(with_added_tokens=True)


def check_vocabulary(
    config: MergeConfiguration, configs: dict[ModelReference, dict[str, Any]], base: ModelReference
) -> None:
    """Without a tokenizer block, embedding rows are mixed by id: ids must mean the same token."""
    if config.tokenizer is not None or config.tokenizer_source is not None:
        return
    sizes = {ref: cfg.get("vocab_size") for ref, cfg in configs.items()}
    for ref, size in sizes.items():
        if size != sizes[base]:
            raise BaiMergeError(
                f"vocabulary size mismatch: {ref} has {size}, base {base} has {sizes[base]}; "
                "set a `tokenizer:` block (e.g. tokenizer: {source: <reasoning model>})"
            )
    base_vocab = _vocab(base)
    if base_vocab is None:
        return
    base_by_id = {i: t for t, i in base_vocab.items()}
    for ref in configs:
        vocab = _vocab(ref) if ref != base else None
        if vocab is None:
            continue
        for token, idx in sorted(vocab.items(), key=lambda item: item[1]):
            if base_by_id.get(idx, token) != token:
                raise BaiMergeError(
                    f"token id {idx} is {token!r} in {ref} but {base_by_id[idx]!r} in base "
                    f"{base}: merging would mix unrelated embedding rows; set a `tokenizer:` "
                    "block (e.g. tokenizer: {source: <reasoning model>})"
                )


def choose_config_source(
    config: MergeConfiguration,
    configs: dict[ModelReference, dict[str, Any]],
    others: tuple[ModelReference, ...],
) -> tuple[ModelReference, str]:
    """`parameters.config_source` if given, else the non-base model with the longest context."""
    wanted = (config.parameters or {}).get("config_source")
    if wanted is not None:
        for ref in configs:
            if str(ref) == str(wanted) or ref.model.path == str(wanted):
                return ref, "set by parameters.config_source"
        raise BaiMergeError(f"config_source {wanted!r} is not one of the merged models")
    best = others[-1]
    for ref in reversed(others):
        if (configs[ref].get(CONTEXT_FIELD) or 0) > (configs[best].get(CONTEXT_FIELD) or 0):
            best = ref
    ctx = configs[best].get(CONTEXT_FIELD)
    return best, f"non-base model with the longest context ({CONTEXT_FIELD}={ctx})"


def preflight(config: MergeConfiguration, config_source: str | None = None) -> MergePlan:
    """Validate a bai merge config; raise BaiMergeError naming the first problem found."""
    if config_source:
        check_yaml_source(config_source)
    if config.base_model is None:
        raise BaiMergeError("bai needs `base_model:` (the pretrained model the others share)")
    if config.slices or config.modules:
        raise BaiMergeError("bai merges whole models: use `models:`, not slices or modules")
    base = config.base_model
    others = tuple(m.model for m in config.models or [])
    if base in others:
        raise BaiMergeError(f"{base} is both base_model and in models: list it once, as base")
    if not others:
        raise BaiMergeError("bai needs at least one model besides base_model under `models:`")
    check_parameters(config)
    check_model_paths([base, *others])
    configs = {ref: _config_dict(ref) for ref in (base, *others)}
    check_family(configs, base)
    check_vocabulary(config, configs, base)
    source, reason = choose_config_source(config, configs, others)
    LOG.info("bai: output config from %s (%s)", source, reason)
    return MergePlan(base=base, others=others, config_source=source, config_reason=reason)
