"""The one strict reader of `merge_method: bai` recipes, shared by mergekit-yaml and bai-sweep."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any

import yaml

from bai_core.merge_math import BaiMergeError

# Top-level keys mergekit's MergeConfiguration knows (`name` is mergekit-multi's stage name).
TOP_KEYS = ("merge_method", "base_model", "models", "parameters", "dtype", "out_dtype",
            "tokenizer_source", "tokenizer", "chat_template", "name", "slices", "modules")
GLOBAL_PARAMS = ("weight", "base_weight", "normalize", "config_source")
TOKENIZER_KEYS = ("source", "tokens", "pad_to_multiple_of")
DTYPES = ("bfloat16", "float16", "float32", "float64")


@dataclass(frozen=True)
class Recipe:
    """A checked bai recipe: the raw mapping plus every value the merge math reads, typed."""

    raw: dict[str, Any]
    base: str
    models: tuple[str, ...]
    weights: tuple[Any, ...]  # per model: number, gradient or filtered list (default applied)
    base_weight: Any
    normalize: bool
    config_source: str | None
    tokenizer_source: str | None
    dtype: str | None = None  # the output's: `out_dtype`, else `dtype`; None: the inputs'

    def scalar_ratios(self) -> tuple[tuple[float, ...], float] | None:
        """(weights, alpha) when every ratio is one number, else None (per-layer settings)."""
        if not all(_is_number(w) for w in (*self.weights, self.base_weight)):
            return None
        return tuple(float(w) for w in self.weights), float(self.base_weight)


class DuplicateKey(BaiMergeError):
    """A key given twice in one YAML mapping."""


class _UniqueKeyLoader(yaml.SafeLoader):
    """A YAML loader that refuses duplicate keys (e.g. two `base_model:` lines)."""


def _unique_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: dict[Any, Any] = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=deep)
        value = loader.construct_object(value_node, deep=deep)
        if key in seen:
            raise DuplicateKey(f"{key!r} is given twice in the config ({seen[key]!r} and "
                               f"{value!r})")
        seen[key] = value
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping)


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def load_yaml(text: str, origin: str = "the config", unique_keys: bool = True) -> Any:
    """YAML -> Python, refusing duplicate keys; syntax errors become one line naming the spot."""
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader if unique_keys else yaml.SafeLoader)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or str(error)
        raise BaiMergeError(f"{origin} is not valid YAML{where}: {problem}") from None


def load_mapping(text: str, origin: str = "the config") -> dict:
    """The config as a mapping (strict YAML); an empty file, a list or a scalar is refused."""
    data = load_yaml(text, origin)
    if data is None:
        raise BaiMergeError(f"{origin} is empty: expected `merge_method: bai`, `base_model:` ...")
    if not isinstance(data, dict):
        raise BaiMergeError(f"{origin} must be a mapping (merge_method: ..., base_model: ...), "
                            f"got a {type(data).__name__}: {_short(data)}")
    return data


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_unknown(mapping: dict, known: tuple[str, ...], where: str) -> None:
    for key in mapping:
        if key not in known:
            raise BaiMergeError(f"unknown key {key!r} in {where}; known keys: {', '.join(known)}")


def _check_number(value: Any, where: str, low: float, high: float | None) -> None:
    if isinstance(value, list):
        if not value:
            raise BaiMergeError(f"{where} is an empty list: give a number or a gradient")
        for item in value:
            _check_number(item, where, low, high)
        return
    span = f"in [{low:g}, {high:g}]" if high is not None else f">= {low:g}"
    if not _is_number(value):
        raise BaiMergeError(f"{where} must be a number {span}, got {_short(value)}")
    if not math.isfinite(value) or value < low or (high is not None and value > high):
        raise BaiMergeError(f"{where} must be a number {span}, got {value!r}")


def check_setting(value: Any, where: str, low: float, high: float | None = None) -> None:
    """A mergekit parameter setting: a number, a gradient, or a list of {filter, value}."""
    if not (isinstance(value, list) and value and all(isinstance(v, dict) for v in value)):
        return _check_number(value, where, low, high)
    for item in value:
        _check_unknown(item, ("filter", "value"), f"a filtered {where}")
        if "value" not in item:
            raise BaiMergeError(f"filtered {where} entry {_short(item)} has no `value:`")
        if "filter" in item and not isinstance(item["filter"], str):
            raise BaiMergeError(f"filter of {where} must be a string, got {_short(item['filter'])}")
        _check_number(item["value"], where, low, high)


def _model_string(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise BaiMergeError(f"{where} must be a model path or hub id (a string), got "
                            f"{_short(value)}")
    if value.count("+") > 1:
        raise BaiMergeError(f"{where} {value!r} has more than one '+' (model+lora)")
    return value


def _mapping(value: Any, where: str, known: tuple[str, ...]) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise BaiMergeError(f"{where} must be a mapping, got {_short(value)}")
    _check_unknown(value, known, where)
    return value


def _dtype(raw: dict, key: str) -> str | None:
    if key not in raw:
        return None
    value = raw[key]
    name = value.removeprefix("torch.") if isinstance(value, str) else value
    if name not in DTYPES:
        raise BaiMergeError(f"unknown {key} {_short(value)}; known: {', '.join(DTYPES)}")
    return name


def parse_recipe(raw: dict[str, Any]) -> Recipe:
    """Check every value of a bai recipe by type and range; raise BaiMergeError on the first."""
    _check_unknown(raw, TOP_KEYS, "the config")
    if raw.get("merge_method") != "bai":
        raise BaiMergeError(f"merge_method must be 'bai', got {_short(raw.get('merge_method'))}")
    if "slices" in raw or "modules" in raw:
        raise BaiMergeError("bai merges whole models: use `models:`, not slices or modules")
    if raw.get("base_model") is None:
        raise BaiMergeError("bai needs `base_model:` (the pretrained model the others share)")
    base = _model_string(raw["base_model"], "base_model")
    entries = raw.get("models")
    if entries is None or entries == []:
        raise BaiMergeError("bai needs at least one model besides base_model under `models:`, "
                            f"got {_short(entries)}")
    if not isinstance(entries, list):
        raise BaiMergeError(f"`models:` must be a list of {{model: ...}}, got {_short(entries)}")
    params = _mapping(raw.get("parameters"), "`parameters:`", GLOBAL_PARAMS)
    default_weight = params.get("weight", 1.0)
    if "weight" in params:
        check_setting(default_weight, "parameters.weight", 0.0)
    models, weights = [], []
    for i, entry in enumerate(entries):
        if isinstance(entry, str):
            raise BaiMergeError(f"models[{i}] must be a mapping like `- model: {entry}`, "
                                f"got the string {entry!r}")
        entry = _mapping(entry, f"models[{i}]", ("model", "parameters"))
        name = _model_string(entry.get("model"), f"models[{i}].model")
        model_params = _mapping(entry.get("parameters"), f"parameters of {name}", ("weight",))
        if "weight" in model_params:
            check_setting(model_params["weight"], f"weight of {name}", 0.0)
        models.append(name)
        weights.append(model_params.get("weight", default_weight))
    base_weight = params.get("base_weight", 0.5)
    check_setting(base_weight, "base_weight", 0.0, 1.0)
    normalize = params.get("normalize", True)
    if not isinstance(normalize, bool):
        raise BaiMergeError(f"normalize must be true or false (a YAML boolean), got "
                            f"{_short(normalize)}")
    if normalize and all(_is_number(w) for w in weights) and sum(weights) == 0:
        raise BaiMergeError(f"weights must not all be zero, got {[float(w) for w in weights]}")
    config_source = (_model_string(params["config_source"], "parameters.config_source")
                     if "config_source" in params else None)
    dtype = _dtype(raw, "dtype")
    dtype = _dtype(raw, "out_dtype") or dtype
    if raw.get("tokenizer") is not None and raw.get("tokenizer_source") is not None:
        raise BaiMergeError("give either `tokenizer:` or `tokenizer_source:`, not both")
    tok = _mapping(raw.get("tokenizer"), "`tokenizer:`", TOKENIZER_KEYS)
    tokenizer_source = None
    if "source" in tok:
        tokenizer_source = _model_string(tok["source"], "tokenizer.source")
    if raw.get("tokenizer_source") is not None:
        tokenizer_source = _model_string(raw["tokenizer_source"], "tokenizer_source")
    if raw.get("chat_template") is not None and not isinstance(raw["chat_template"], str):
        raise BaiMergeError(f"chat_template must be a string, got {_short(raw['chat_template'])}")
    return Recipe(raw=raw, base=base, models=tuple(models), weights=tuple(weights),
                  base_weight=base_weight, normalize=normalize, config_source=config_source,
                  tokenizer_source=tokenizer_source, dtype=dtype)


def read_text(path: str | os.PathLike, what: str) -> tuple[str, str]:
    """(text, origin) of a recipe file; `what` ("recipe", "config file") names it in errors."""
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read(), f"{what} {path}"
    except (OSError, UnicodeDecodeError) as error:
        raise BaiMergeError(f"cannot read {what} {path}: {error}") from None


def parse_recipe_text(text: str, origin: str = "the config") -> Recipe:
    """Strict YAML (no duplicate keys) -> checked Recipe."""
    return parse_recipe(load_mapping(text, origin))


def bai_recipe_or_none(text: str, origin: str) -> Recipe | None:
    """The checked recipe of a `merge_method: bai` config; None for other methods, which are
    mergekit's to read (duplicate keys included). Broken YAML is refused for any method."""
    try:
        data = load_mapping(text, origin)
    except DuplicateKey:
        data = load_yaml(text, origin, unique_keys=False)
        if not isinstance(data, dict) or data.get("merge_method") != "bai":
            return None
        raise
    if "merge_method" not in data:
        raise BaiMergeError(f"{origin} has no `merge_method:` (e.g. merge_method: bai)")
    return parse_recipe(data) if data["merge_method"] == "bai" else None
