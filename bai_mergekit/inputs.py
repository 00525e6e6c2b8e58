"""Checks on the input model folders: config, weights, intact safetensors, implied tensors."""

from __future__ import annotations

import json
import logging
import os
import struct
from dataclasses import dataclass
from typing import Any

from bai_mergekit.errors import BaiMergeError

LOG = logging.getLogger(__name__)
INDEX_FILE = "model.safetensors.index.json"


@dataclass(frozen=True)
class TensorInfo:
    """Shape and safetensors dtype string of one stored tensor."""

    shape: tuple[int, ...]
    dtype: str


def read_safetensors_header(path: str) -> dict[str, TensorInfo]:
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
    except (OSError, ValueError) as error:
        raise BaiMergeError(f"corrupt safetensors file {path}: {error}") from None
    if not isinstance(header, dict):
        raise BaiMergeError(f"corrupt safetensors file {path}: header is not a mapping")
    end = 0
    tensors = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        try:
            start, stop = meta["data_offsets"]
            tensors[name] = TensorInfo(tuple(meta["shape"]), meta["dtype"])
        except (KeyError, TypeError, ValueError):
            raise BaiMergeError(f"corrupt safetensors file {path}: bad entry {name!r}") from None
        end = max(end, stop)
    if 8 + length + end > size:
        raise BaiMergeError(
            f"truncated safetensors file {path}: its header needs {8 + length + end} bytes, "
            f"the file has {size}"
        )
    return tensors


def _weight_files(folder: str) -> tuple[list[str], bool]:
    """(safetensors files, whether only pickled *.bin weights exist)."""
    index = os.path.join(folder, INDEX_FILE)
    if os.path.isfile(index):
        try:
            weight_map = json.loads(open(index, encoding="utf-8").read())["weight_map"]
            shards = sorted(set(weight_map.values()))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
            raise BaiMergeError(f"unreadable weight index {index}: {error}") from None
        for shard in shards:
            if not os.path.isfile(os.path.join(folder, shard)):
                raise BaiMergeError(f"{index} lists {shard}, which is missing from {folder}")
        return [os.path.join(folder, s) for s in shards], False
    names = sorted(os.listdir(folder))
    safet = [os.path.join(folder, n) for n in names if n.endswith(".safetensors")]
    if safet:
        return safet, False
    if any(n.endswith(".bin") for n in names):
        return [], True
    raise BaiMergeError(f"model folder has no weights (*.safetensors or *.bin): {folder}")


def read_model_config(folder: str) -> dict[str, Any]:
    """config.json of a local model folder as a dict; missing or broken is refused."""
    path = os.path.join(folder, "config.json")
    if not os.path.isfile(path):
        raise BaiMergeError(f"model directory has no config.json: {folder}")
    try:
        data = json.loads(open(path, encoding="utf-8").read())
    except (OSError, ValueError) as error:
        raise BaiMergeError(f"unreadable config.json in {folder}: {error}") from None
    if not isinstance(data, dict):
        raise BaiMergeError(f"config.json in {folder} is not a JSON object")
    return data


def tensor_table(folder: str) -> dict[str, TensorInfo] | None:
    """Every tensor of a local model folder (None for pickled *.bin checkpoints)."""
    files, only_bin = _weight_files(folder)
    if only_bin:
        LOG.info("%s holds *.bin weights: tensor names are checked by mergekit", folder)
        return None
    table: dict[str, TensorInfo] = {}
    for path in files:
        table.update(read_safetensors_header(path))
    return table


def ties_embeddings(config: dict[str, Any]) -> bool:
    """transformers' default: embeddings are tied unless the config says otherwise."""
    text = config.get("text_config")
    if isinstance(text, dict) and "tie_word_embeddings" in text:
        return bool(text["tie_word_embeddings"])
    return bool(config.get("tie_word_embeddings", True))


def check_implied_tensors(ref: Any, config: dict[str, Any], table: dict[str, TensorInfo]) -> None:
    """Every tensor the model's own config implies must be stored (mergekit's weight list).

    Optional weights are required only when tied to another one and the config unties them
    (`lm_head.weight` with `tie_word_embeddings: false`): mergekit would otherwise fill them
    from the tensor they are tied to.
    """
    from mergekit.architecture import arch_info_for_config

    try:
        weights = arch_info_for_config(ref.config()).all_weights(ref.config())
    except Exception:  # unknown or odd architecture: mergekit reports it itself
        return
    tied = ties_embeddings(config)
    for info in weights:
        if info.optional and not (info.tied_names and not tied):
            continue
        names = (info.name, *(info.aliases or ()))
        if not any(n in table for n in names):
            why = " (its config says tie_word_embeddings: false)" if (
                not tied and "lm_head" in names[0]) else ""
            raise BaiMergeError(f"model {ref} has no tensor {names[0]!r}{why}")


def check_same_tensors(
    base_name: str, base: dict[str, TensorInfo], name: str, table: dict[str, TensorInfo]
) -> None:
    """Every tensor of the base exists with the same shape in the other model."""
    for tensor, info in base.items():
        other = table.get(tensor)
        if other is None:
            raise BaiMergeError(f"model {name} has no tensor {tensor!r} (base {base_name} has it)")
        if other.shape != info.shape:
            raise BaiMergeError(
                f"tensor {tensor!r} has shape {list(other.shape)} in {name} but "
                f"{list(info.shape)} in base {base_name}"
            )
