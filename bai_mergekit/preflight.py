"""Checks a `bai` merge before any tensor is read (model folders, safetensors, family,
vocabulary) and plans it: one clear error per bad input."""

from __future__ import annotations

import json
import logging
import os
import struct
from dataclasses import dataclass
from typing import Any

from bai_core.merge_math import BaiMergeError
from bai_mergekit.identity import TOKENIZER_WORDS, check_identities, resolve
from bai_mergekit.recipe import Recipe

LOG = logging.getLogger(__name__)
INDEX_FILE = "model.safetensors.index.json"
# Config fields that must agree for a weight-space merge to be meaningful.
FAMILY_FIELDS = ("model_type", "architectures", "hidden_size", "num_hidden_layers",
                 "intermediate_size", "num_attention_heads", "num_key_value_heads", "head_dim")
CONTEXT_FIELD = "max_position_embeddings"
SET_A_BLOCK = "set a `tokenizer:` block (e.g. tokenizer: {source: <reasoning model>})"
Table = dict[str, tuple[tuple[int, ...], str]]  # tensor name -> (shape, safetensors dtype)


@dataclass(frozen=True)
class MergePlan:
    """What the pre-flight decided: the inputs, the config source and the tokenizer."""

    base: Any  # mergekit ModelReference, as every reference below
    others: tuple[Any, ...]
    config_source: Any
    config_reason: str
    recipe: Recipe
    # Whose tokenizer files the output gets, its embedding rows merged by id (the vocabulary
    # padding of the inputs kept); None: mergekit aligns the rows by token to its tokenizer.
    tokenizer: Any | None
    tokenizer_reason: str
    tensors: tuple[Table | None, ...] = ()  # per model, None: not local or *.bin


def _read_json(path: str, what: str) -> Any:
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError) as error:
        raise BaiMergeError(f"unreadable {what}: {error}") from None


def read_safetensors_header(path: str) -> Table:
    """Names, shapes and dtypes of a safetensors file; a truncated or corrupt file is refused."""
    size = os.path.getsize(path)
    try:
        with open(path, "rb") as handle:
            head = handle.read(8)
            if len(head) < 8:
                raise ValueError("shorter than its 8-byte header length")
            (length,) = struct.unpack("<Q", head)
            if length > size - 8:
                raise ValueError(f"header of {length} bytes but the file has {size}")
            header = json.loads(handle.read(length))
        if not isinstance(header, dict):
            raise ValueError("header is not a mapping")
    except (OSError, ValueError) as error:
        raise BaiMergeError(f"corrupt safetensors file {path}: {error}") from None
    end, tensors = 0, {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        try:
            end = max(end, meta["data_offsets"][1])
            tensors[name] = (tuple(meta["shape"]), meta["dtype"])
        except (KeyError, TypeError, ValueError, IndexError):
            raise BaiMergeError(f"corrupt safetensors file {path}: bad entry {name!r}") from None
    if 8 + length + end > size:
        raise BaiMergeError(f"truncated safetensors file {path}: its header needs "
                            f"{8 + length + end} bytes, the file has {size}")
    return tensors


def tensor_table(folder: str) -> Table | None:
    """Every tensor of a local model folder (None for pickled *.bin checkpoints)."""
    index = os.path.join(folder, INDEX_FILE)
    if os.path.isfile(index):
        try:
            shards = sorted(set(_read_json(index, f"weight index {index}")["weight_map"].values()))
        except (KeyError, TypeError, AttributeError) as error:
            raise BaiMergeError(f"unreadable weight index {index}: {error}") from None
        for shard in shards:
            if not os.path.isfile(os.path.join(folder, shard)):
                raise BaiMergeError(f"{index} lists {shard}, which is missing from {folder}")
    else:
        names = sorted(os.listdir(folder))
        shards = [n for n in names if n.endswith(".safetensors")]
        if not shards and any(n.endswith(".bin") for n in names):
            LOG.info("%s holds *.bin weights: tensor names are checked by mergekit", folder)
            return None
        if not shards:
            raise BaiMergeError(f"model folder has no weights (*.safetensors or *.bin): {folder}")
    table: Table = {}
    for shard in shards:
        table.update(read_safetensors_header(os.path.join(folder, shard)))
    return table


def check_architectures(name: str, config: dict[str, Any]) -> None:
    """mergekit finds a model's tensors by its config's `architectures`: it must name one."""
    archs = config.get("architectures")
    if isinstance(archs, list) and archs and all(isinstance(a, str) for a in archs):
        return
    what = "no" if archs is None else "an empty" if archs == [] else f"an unusable ({archs!r})"
    raise BaiMergeError(f"model {name}: config.json has {what} `architectures` key (a list such "
                        "as [\"Qwen2ForCausalLM\"]: mergekit needs it to know the tensors)")


def read_model_config(folder: str) -> dict[str, Any]:
    """config.json of a local model folder as a dict; missing, broken or without
    `architectures` is refused."""
    path = os.path.join(folder, "config.json")
    if not os.path.isfile(path):
        raise BaiMergeError(f"model directory has no config.json: {folder}")
    data = _read_json(path, f"config.json in {folder}")
    if not isinstance(data, dict):
        raise BaiMergeError(f"config.json in {folder} is not a JSON object")
    check_architectures(folder, data)
    return data


def check_implied_tensors(ref: Any, config: dict[str, Any], table: Table) -> None:
    """Every tensor the model's own config implies must be stored (mergekit's weight list); an
    optional one only when the config unties it from the tensor mergekit would otherwise fill
    it from (`lm_head.weight` with `tie_word_embeddings: false`)."""
    from mergekit.architecture import arch_info_for_config

    try:
        weights = arch_info_for_config(ref.config()).all_weights(ref.config())
    except Exception:  # unknown or odd architecture: mergekit reports it itself
        return
    text = config.get("text_config")  # transformers' default: tied unless the config unties
    tied = bool((text if isinstance(text, dict) and "tie_word_embeddings" in text else config)
                .get("tie_word_embeddings", True))
    for info in weights:
        names = (info.name, *(info.aliases or ()))
        if (info.optional and not (info.tied_names and not tied)) or any(n in table for n in names):
            continue
        why = " (its config says tie_word_embeddings: false)" if (
            not tied and "lm_head" in names[0]) else ""
        raise BaiMergeError(f"model {ref} has no tensor {names[0]!r}{why}")


def check_same_tensors(base_name: str, base: Table, name: str, table: Table) -> None:
    """Every tensor of the base exists with the same shape in the other model."""
    for tensor, (shape, _) in base.items():
        if tensor not in table:
            raise BaiMergeError(f"model {name} has no tensor {tensor!r} (base {base_name} has it)")
        if table[tensor][0] != shape:
            raise BaiMergeError(f"tensor {tensor!r} has shape {list(table[tensor][0])} in {name} "
                                f"but {list(shape)} in base {base_name}")


def _vocab(ref: Any) -> dict[str, int] | None:
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


def check_vocabulary(configs: dict[Any, dict[str, Any]], base: Any) -> bool:
    """Embedding rows mixed by id need ids that mean the same token in every model; refuse
    otherwise. Returns whether every model's tokenizer.json could be compared."""
    for ref, cfg in configs.items():
        if cfg.get("vocab_size") != configs[base].get("vocab_size"):
            raise BaiMergeError(f"vocabulary size mismatch: {ref} has {cfg.get('vocab_size')}, "
                                f"base {base} has {configs[base].get('vocab_size')}; {SET_A_BLOCK}")
    base_vocab = _vocab(base)
    if base_vocab is None:
        return False
    base_by_id = {i: t for t, i in base_vocab.items()}
    complete = True
    for ref in [r for r in configs if r != base]:
        vocab = _vocab(ref)
        complete = complete and vocab is not None
        for token, idx in sorted((vocab or {}).items(), key=lambda item: item[1]):
            if base_by_id.get(idx, token) != token:
                raise BaiMergeError(
                    f"token id {idx} is {token!r} in {ref} but {base_by_id[idx]!r} in base "
                    f"{base}: merging would mix unrelated embedding rows; {SET_A_BLOCK}")
    return complete


def choose_tokenizer(recipe: Recipe, configs: dict[Any, dict[str, Any]], refs: tuple[Any, ...],
                     config_source: Any, named: Any | None) -> tuple[Any | None, str]:
    """Rows are merged by id (the inputs' padded vocabulary kept, as a reward model or critic
    of the same family expects) unless that would mix unrelated tokens: then mergekit aligns
    them by token to the `tokenizer:` block's vocabulary, which drops the padding rows.
    `named`: the merged model the block's source names, if any."""
    tok = recipe.tokenizer_source
    if tok is None:  # no tokenizer block: the ids must mean the same tokens
        check_vocabulary(configs, refs[0])
        return config_source, "no tokenizer block; token ids checked identical"
    source = refs[0] if tok == "base" else None if tok in TOKENIZER_WORDS else named
    why = "aligned by token by mergekit"
    if set(recipe.raw.get("tokenizer") or {}) - {"source"} or source is None:
        return None, f"{why}: the tokenizer block does more than name a merged model"
    try:
        if not check_vocabulary(configs, refs[0]):
            return None, f"{why}: not every model has a tokenizer.json to compare"
    except BaiMergeError as error:
        return None, f"{why}: {error}"
    return source, "the tokenizer block's source; token ids identical, so rows merged by id"


def _config_dict(ref: Any, local: bool) -> dict[str, Any]:
    try:
        return ref.config().to_dict()
    except Exception as error:  # transformers raises many types here
        if local:
            raise BaiMergeError(f"cannot load the config of {ref}: {error}") from None
        first = " ".join(str(error).split())[:300]
        raise BaiMergeError(f"model {ref} is not a local folder and could not be loaded from "
                            f"the Hugging Face hub: {type(error).__name__}: {first}") from None


def preflight(config: Any, recipe: Recipe) -> MergePlan:
    """Validate a bai merge (`recipe` is the MergeConfiguration `config` parsed strictly) and
    choose its config source and tokenizer; raise BaiMergeError naming the first problem."""
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
    for ref, cfg in configs.items():  # one pretrained family: the base's architecture, shapes
        check_architectures(str(ref), cfg)
        for field in FAMILY_FIELDS:
            if cfg.get(field) != configs[refs[0]].get(field):
                raise BaiMergeError(f"{ref} is not of the base's family: {field} = "
                                    f"{cfg.get(field)!r}, base {refs[0]} has "
                                    f"{configs[refs[0]].get(field)!r}")
    by_id = {ids[n]: r for r, n in reversed(list(zip(refs, names)))}
    # config.json: parameters.config_source (check_identities made sure it is merged), else
    # the non-base model with the longest context (the last one listed on a tie)
    if recipe.config_source is not None:
        source, reason = by_id[ids[recipe.config_source]], "set by parameters.config_source"
    else:
        source = max(reversed(refs[1:]), key=lambda r: configs[r].get(CONTEXT_FIELD) or 0)
        reason = (f"non-base model with the longest context "
                  f"({CONTEXT_FIELD}={configs[source].get(CONTEXT_FIELD)})")
    tokenizer, tok_reason = choose_tokenizer(recipe, configs, refs, source,
                                             by_id.get(ids.get(recipe.tokenizer_source)))
    LOG.info("bai: output config from %s (%s); tokenizer: %s", source, reason, tok_reason)
    return MergePlan(base=refs[0], others=refs[1:], config_source=source, config_reason=reason,
                     recipe=recipe, tokenizer=tokenizer, tokenizer_reason=tok_reason,
                     tensors=tuple(tables))
