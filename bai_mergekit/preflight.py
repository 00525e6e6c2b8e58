"""Checks a `bai` merge before any tensor is read: one clear error per bad input, and the plan."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

from mergekit.common import ModelReference
from mergekit.config import MergeConfiguration

from bai_mergekit.errors import BaiMergeError
from bai_mergekit.identity import TOKENIZER_WORDS, check_identities, resolve
from bai_mergekit.inputs import TensorInfo, check_implied_tensors, read_model_config, tensor_table
from bai_mergekit.recipe import Recipe

LOG = logging.getLogger(__name__)

# Config fields that must agree for a weight-space merge to be meaningful.
FAMILY_FIELDS = ("model_type", "architectures", "hidden_size", "num_hidden_layers",
                 "intermediate_size", "num_attention_heads", "num_key_value_heads", "head_dim")
CONTEXT_FIELD = "max_position_embeddings"
SET_A_BLOCK = "set a `tokenizer:` block (e.g. tokenizer: {source: <reasoning model>})"


@dataclass(frozen=True)
class MergePlan:
    """What the pre-flight decided: the inputs, the config source and the tokenizer."""

    base: ModelReference
    others: tuple[ModelReference, ...]
    config_source: ModelReference
    config_reason: str
    recipe: Recipe
    # Whose tokenizer files the output gets, its embedding rows merged by id (the vocabulary
    # padding of the inputs kept); None: mergekit aligns the rows by token to its tokenizer.
    tokenizer: ModelReference | None
    tokenizer_reason: str
    tensors: tuple[dict[str, TensorInfo] | None, ...] = ()  # per model, None: not local


def check_family(configs: dict[ModelReference, dict[str, Any]], base: ModelReference) -> None:
    """All models must share the base's architecture and shapes (one pretrained family)."""
    for ref, cfg in configs.items():
        for field in FAMILY_FIELDS:
            if cfg.get(field) != configs[base].get(field):
                raise BaiMergeError(
                    f"{ref} is not of the base's family: {field} = {cfg.get(field)!r}, "
                    f"base {base} has {configs[base].get(field)!r}"
                )


def _vocab(ref: ModelReference) -> dict[str, int] | None:
    tok_file = os.path.join(ref.model.path, "tokenizer.json")
    if not os.path.isdir(ref.model.path):  # a hub model: its tokenizer.json alone
        try:
            from huggingface_hub import hf_hub_download

            tok_file = hf_hub_download(ref.model.path, "tokenizer.json",
                                       revision=ref.model.revision)
        except Exception:  # noqa: BLE001 - offline, no such file: not comparable
            return None
    if not os.path.isfile(tok_file):
        return None
    from tokenizers import Tokenizer

    return Tokenizer.from_file(tok_file).get_vocab(with_added_tokens=True)


def check_vocabulary(configs: dict[ModelReference, dict[str, Any]], base: ModelReference) -> bool:
    """Embedding rows mixed by id need ids that mean the same token in every model; refuse
    otherwise. Returns whether every model's tokenizer.json could be compared."""
    sizes = {ref: cfg.get("vocab_size") for ref, cfg in configs.items()}
    for ref, size in sizes.items():
        if size != sizes[base]:
            raise BaiMergeError(f"vocabulary size mismatch: {ref} has {size}, base {base} has "
                                f"{sizes[base]}; {SET_A_BLOCK}")
    base_vocab = _vocab(base)
    if base_vocab is None:
        return False
    base_by_id = {i: t for t, i in base_vocab.items()}
    complete = True
    for ref in configs:
        if ref == base:
            continue
        vocab = _vocab(ref)
        complete = complete and vocab is not None
        for token, idx in sorted((vocab or {}).items(), key=lambda item: item[1]):
            if base_by_id.get(idx, token) != token:
                raise BaiMergeError(
                    f"token id {idx} is {token!r} in {ref} but {base_by_id[idx]!r} in base "
                    f"{base}: merging would mix unrelated embedding rows; {SET_A_BLOCK}")
    return complete


def choose_config_source(recipe: Recipe, ids: dict[str, str], refs: tuple[ModelReference, ...],
                         configs: dict[ModelReference, dict[str, Any]]) -> tuple[Any, str]:
    """`parameters.config_source` if given, else the non-base model with the longest context."""
    if recipe.config_source is not None:  # check_identities made sure it is a merged model
        names = (recipe.base, *recipe.models)
        ref = next(r for r, n in zip(refs, names) if ids[n] == ids[recipe.config_source])
        return ref, "set by parameters.config_source"
    best = refs[-1]
    for ref in reversed(refs[1:]):
        if (configs[ref].get(CONTEXT_FIELD) or 0) > (configs[best].get(CONTEXT_FIELD) or 0):
            best = ref
    ctx = configs[best].get(CONTEXT_FIELD)
    return best, f"non-base model with the longest context ({CONTEXT_FIELD}={ctx})"


def choose_tokenizer(recipe: Recipe, ids: dict[str, str], refs: tuple[ModelReference, ...],
                     configs: dict[ModelReference, dict[str, Any]],
                     config_source: ModelReference) -> tuple[ModelReference | None, str]:
    """Rows are merged by id (the inputs' padded vocabulary kept, as a reward model or critic
    of the same family expects) unless that would mix unrelated tokens: then mergekit aligns
    them by token to the `tokenizer:` block's vocabulary, which drops the padding rows."""
    tok = recipe.tokenizer_source
    if tok is None:  # no tokenizer block: the ids must mean the same tokens
        check_vocabulary(configs, refs[0])
        return config_source, "no tokenizer block; token ids checked identical"
    block = recipe.raw.get("tokenizer") or {}
    names = (recipe.base, *recipe.models)
    source = refs[0] if tok == "base" else next(
        (r for r, n in zip(refs, names) if tok not in TOKENIZER_WORDS and ids[n] == ids[tok]),
        None)
    why = "aligned by token by mergekit"
    if set(block) - {"source"} or source is None:
        return None, f"{why}: the tokenizer block does more than name a merged model"
    try:
        if not check_vocabulary(configs, refs[0]):
            return None, f"{why}: not every model has a tokenizer.json to compare"
    except BaiMergeError as error:
        return None, f"{why}: {error}"
    return source, "the tokenizer block's source; token ids identical, so rows merged by id"


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


def preflight(config: MergeConfiguration, recipe: Recipe) -> MergePlan:
    """Validate a bai merge (`recipe` is `config` as parsed strictly); raise BaiMergeError
    naming the first problem found."""
    ids = check_identities(recipe)
    refs = (config.base_model, *(m.model for m in config.models or []))
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
    if tok in ids and ids[tok].startswith("path:") and not os.path.isdir(resolve(tok)[1]):
        raise BaiMergeError(f"tokenizer.source is not a model folder: {tok}")
    configs = {ref: _config_dict(ref, ids[n].startswith("path:")) for ref, n in zip(refs, names)}
    check_family(configs, refs[0])
    source, reason = choose_config_source(recipe, ids, refs, configs)
    tokenizer, tok_reason = choose_tokenizer(recipe, ids, refs, configs, source)
    LOG.info("bai: output config from %s (%s); tokenizer: %s", source, reason, tok_reason)
    return MergePlan(base=refs[0], others=refs[1:], config_source=source, config_reason=reason,
                     recipe=recipe, tokenizer=tokenizer, tokenizer_reason=tok_reason,
                     tensors=tuple(tables))
