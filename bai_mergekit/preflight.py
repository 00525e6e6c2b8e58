"""Checks a `bai` merge config before any tensor is read: one clear error per bad input."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

from mergekit.common import ModelReference
from mergekit.config import MergeConfiguration

from bai_mergekit.errors import BaiMergeError
from bai_mergekit.inputs import (
    TensorInfo,
    check_tensors,
    implied_tensors,
    read_model_config,
    tensor_table,
)
from bai_mergekit.recipe import (
    Recipe,
    check_identities,
    load_mapping,
    parse_recipe,
    parse_recipe_text,
    resolve,
)

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
    recipe: Recipe
    identities: tuple[str, ...] = ()  # resolved identity of base, then each other model
    tensors: tuple[dict[str, TensorInfo] | None, ...] = ()  # per model, None: not local

    def local_inputs(self) -> list[tuple[str, str]]:
        """(what, folder) of every local input: an output must never touch them."""
        refs = [self.recipe.base, *self.recipe.models]
        if self.recipe.tokenizer_source not in (None, "base", "union"):
            refs.append(self.recipe.tokenizer_source)
        found = []
        for ref in refs:
            kind, where = resolve(ref)
            if kind == "path":
                found.append((f"input model {ref}", where))
        return found


def read_recipe(config: MergeConfiguration, config_source: str | None = None) -> Recipe:
    """The strict recipe: from the YAML text when given (mergekit-yaml), else from `config`."""
    if config_source:
        return parse_recipe_text(config_source)
    return parse_recipe(load_mapping(config.to_yaml()))


def check_parameters(config: MergeConfiguration) -> None:
    """Type- and range-check every bai parameter of `config` (see recipe.parse_recipe)."""
    read_recipe(config)


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
    ids: dict[str, str] | None = None,
    names: tuple[str, ...] = (),
) -> tuple[ModelReference, str]:
    """`parameters.config_source` if given, else the non-base model with the longest context."""
    wanted = (config.parameters or {}).get("config_source")
    if wanted is not None:
        for ref, name in zip(configs, names or [str(r) for r in configs]):
            same = ids is not None and ids.get(str(wanted)) == ids.get(name)
            if same or str(ref) == str(wanted) or ref.model.path == str(wanted):
                return ref, "set by parameters.config_source"
        raise BaiMergeError(f"config_source {wanted!r} is not one of the merged models")
    best = others[-1]
    for ref in reversed(others):
        if (configs[ref].get(CONTEXT_FIELD) or 0) > (configs[best].get(CONTEXT_FIELD) or 0):
            best = ref
    ctx = configs[best].get(CONTEXT_FIELD)
    return best, f"non-base model with the longest context ({CONTEXT_FIELD}={ctx})"


def _hub_error(ref: ModelReference, error: Exception) -> BaiMergeError:
    first = " ".join(str(error).split())[:300]
    return BaiMergeError(
        f"model {ref} is not a local folder and could not be loaded from the Hugging Face "
        f"hub: {type(error).__name__}: {first}"
    )


def _config_dict(ref: ModelReference, local: bool) -> dict[str, Any]:
    try:
        return ref.config().to_dict()
    except Exception as error:  # transformers raises many types here
        if not local:
            raise _hub_error(ref, error) from None
        raise BaiMergeError(f"cannot load the config of {ref}: {error}") from None


def check_implied_tensors(
    ref: ModelReference, raw_config: dict[str, Any], table: dict[str, TensorInfo]
) -> None:
    """Every tensor the model's own config implies must be stored (mergekit's weight list)."""
    from mergekit.architecture import arch_info_for_config

    try:
        arch = arch_info_for_config(ref.config())
    except Exception:  # unknown or odd architecture: mergekit reports it itself
        arch = None
    if arch is None:
        return
    check_tensors(str(ref), table, implied_tensors(arch.all_weights(ref.config()), raw_config),
                  raw_config)


def preflight(config: MergeConfiguration, config_source: str | None = None) -> MergePlan:
    """Validate a bai merge config; raise BaiMergeError naming the first problem found."""
    recipe = read_recipe(config, config_source)
    ids = check_identities(recipe)
    base = config.base_model
    others = tuple(m.model for m in config.models or [])
    refs = (base, *others)
    names = (recipe.base, *recipe.models)
    tables = []
    for ref, name in zip(refs, names):
        kind, folder = resolve(name)
        table = None
        if kind == "path":
            if not os.path.isdir(folder):
                raise BaiMergeError(f"model path is not a folder: {name}")
            raw_config = read_model_config(folder)
            table = tensor_table(folder)
            if table is not None:
                check_implied_tensors(ref, raw_config, table)
        tables.append(table)
    tok = recipe.tokenizer_source
    if tok is not None and tok in ids and ids[tok].startswith("path:"):
        if not os.path.isdir(resolve(tok)[1]):
            raise BaiMergeError(f"tokenizer.source is not a model folder: {tok}")
    configs = {
        ref: _config_dict(ref, ids[name].startswith("path:")) for ref, name in zip(refs, names)
    }
    check_family(configs, base)
    check_vocabulary(config, configs, base)
    source, reason = choose_config_source(config, configs, others, ids, names)
    LOG.info("bai: output config from %s (%s)", source, reason)
    return MergePlan(base=base, others=others, config_source=source, config_reason=reason,
                     recipe=recipe, identities=tuple(ids[n] for n in names),
                     tensors=tuple(tables))
