"""The `bai-sweep` engine: K candidate actors over a (weight, base_weight) grid, each input
tensor read once (the command line is bai_tools.sweep_cli)."""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bai_core.merge_math import (
    BaiMergeError,
    bai_merge_chunks,
    coefficients,
    nonfinite_error,
    ratio,
)
from bai_mergekit.identity import check_identities, local_inputs, resolve
from bai_mergekit.output import (
    MARKER,
    OLD_MARK,
    PARTIAL_MARK,
    atomic_directory,
    check_output_location,
    finish_output,
    prepare_output,
)
from bai_mergekit.preflight import check_same_tensors, preflight, read_model_config, tensor_table
from bai_mergekit.recipe import Recipe, check_setting, parse_recipe_text, read_text

if TYPE_CHECKING:  # torch and mergekit load only once the recipe has passed its checks
    import torch

    from bai_mergekit.safetensors_stream import TensorSpec

LOG = logging.getLogger(__name__)
INDEX = "sweep.json"
INDEX_FORMAT = 1


@dataclass(frozen=True)
class Candidate:
    """One grid point: stage-1 weights (one per non-base model) and alpha."""

    weights: tuple[float, ...]
    base_weight: float

    @property
    def name(self) -> str:
        """Folder name; repr() is the shortest exact form, so distinct values never collide."""
        w = "_".join(repr(x) for x in self.weights)
        return f"bai-a{self.base_weight!r}-w{w}"

    def recipe(self, recipe: Recipe) -> Recipe:
        """The recipe with this candidate's scalar ratios: what its mergekit_config.yml says."""
        raw = json.loads(json.dumps(recipe.raw))
        raw["parameters"] = {**(raw.get("parameters") or {}), "base_weight": self.base_weight}
        for model, weight in zip(raw["models"], self.weights):
            model["parameters"] = {**(model.get("parameters") or {}), "weight": weight}
        return dataclasses.replace(recipe, raw=raw, weights=self.weights,
                                   base_weight=self.base_weight)


def grid(recipe: Recipe, base_weights, weight_sets) -> list[Candidate]:
    """Cartesian grid; the recipe's own scalar values fill whatever axis is not given."""
    scalar_only = "bai-sweep takes scalar ratios, not per-layer gradients or filters"
    if not weight_sets and not all(isinstance(w, (int, float)) for w in recipe.weights):
        raise BaiMergeError(f"{scalar_only}: the recipe's weights are {list(recipe.weights)}")
    if not base_weights and not isinstance(recipe.base_weight, (int, float)):
        raise BaiMergeError(f"{scalar_only}: the recipe's base_weight is {recipe.base_weight!r}")
    cands = []
    for weights, alpha in itertools.product(weight_sets or [tuple(recipe.weights)],
                                            base_weights or [recipe.base_weight]):
        if len(weights) != len(recipe.models):
            raise BaiMergeError(f"each --weights needs {len(recipe.models)} numbers (one per "
                                f"model), got {','.join(f'{w:g}' for w in weights)}")
        check_setting(alpha, "base_weight", 0.0, 1.0)
        for w in weights:
            check_setting(w, "--weights value", 0.0)
        if recipe.normalize and sum(weights) == 0:
            raise BaiMergeError(f"weights must not all be zero, got {list(weights)}")
        cands.append(Candidate(tuple(float(w) for w in weights), float(alpha)))
    return list(dict.fromkeys(cands))  # names are exact (repr), so distinct points never clash


def _ours(entry: Path) -> bool:
    """sweep.json, a candidate folder or a partial one that bai-sweep wrote."""
    if entry.name == INDEX:
        try:
            earlier = json.loads(entry.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return False
        return isinstance(earlier, dict) and earlier.get("tool") == "bai-sweep"
    if entry.name.startswith(".bai-a") and (PARTIAL_MARK in entry.name or OLD_MARK in entry.name):
        return entry.is_dir()
    return entry.name.startswith("bai-a") and (entry / MARKER).is_file()


def check_sweep_root(out_dir: Path) -> None:
    """OUT_DIR must be new, empty, or hold only what bai-sweep writes (an earlier sweep)."""
    if not out_dir.exists():
        return
    if not out_dir.is_dir():
        raise BaiMergeError(f"output path {out_dir} exists and is not a folder")
    foreign = sorted(p.name for p in out_dir.iterdir() if not _ours(p))
    if foreign:
        raise BaiMergeError(f"output folder {out_dir} exists and is not an earlier bai-sweep "
                            f"output (it holds {len(foreign)} entries bai-sweep did not write: "
                            f"{', '.join(foreign[:5])}); choose a new folder")


def _input_entry(name: str) -> dict[str, Any]:
    kind, where = resolve(name)
    return {"model": name, "path": where if kind == "path" else None,
            "hub_id": where if kind == "hub" else None}


def sweep_index(recipe_path: Path, recipe: Recipe, cands: list[Candidate]) -> dict[str, Any]:
    """sweep.json: the inputs (yaml names and resolved paths) and every candidate's ratios."""
    def entry(c: Candidate) -> dict[str, Any]:
        c_base, c_models = coefficients(c.weights, c.base_weight, recipe.normalize)
        return {"path": c.name, "base_weight": c.base_weight, "weights": list(c.weights),
                "weights_normalized": list(ratio(c.weights, c.base_weight, recipe.normalize)[1]),
                "weights_by_model": dict(zip(recipe.models, c.weights)),
                "coefficients": {"base": c_base, "models": c_models}}

    return {"tool": "bai-sweep", "format": INDEX_FORMAT, "recipe": str(recipe_path.absolute()),
            "normalize": recipe.normalize, "config_source": recipe.config_source,
            "base_model": _input_entry(recipe.base),
            "models": [_input_entry(m) for m in recipe.models],
            "candidates": [entry(c) for c in cands]}


def run_sweep(recipe_path: Path, out_dir: Path, base_weights: list[float],
              weight_sets: list[tuple[float, ...]], max_shard_size: int = 1000**3,
              quiet: bool = False) -> list[Path]:
    """Write one complete model dir per candidate; every input tensor is read exactly once."""
    recipe_path, out_dir = Path(recipe_path), Path(out_dir)
    recipe = parse_recipe_text(*read_text(recipe_path, "recipe"))
    if max_shard_size <= 0:
        raise BaiMergeError(f"--out-shard-size must be positive, got {max_shard_size}")
    cands = grid(recipe, base_weights, weight_sets)
    check_identities(recipe)
    for name in (recipe.base, *recipe.models):  # cheap checks before torch/mergekit load
        kind, folder = resolve(name)
        if kind == "path" and os.path.isdir(folder):
            read_model_config(folder)
            tensor_table(folder)
    check_output_location(out_dir, [*local_inputs(recipe), ("recipe file", str(recipe_path))])
    check_sweep_root(out_dir)
    for c in cands:
        prepare_output(out_dir / c.name)
    created = not out_dir.exists()
    try:
        return _write_grid(recipe_path, recipe, out_dir, cands, max_shard_size, quiet)
    except BaseException:
        if created and out_dir.is_dir() and not any(out_dir.iterdir()):
            out_dir.rmdir()  # a folder this failed run created stays absent
        raise


def _write_grid(recipe_path, recipe, out_dir, cands, max_shard_size, quiet) -> list[Path]:
    """Merge every tensor once for all candidates, then finish each folder and the index."""
    import yaml
    from mergekit.card import generate_card
    from mergekit.common import dtype_from_name
    from mergekit.config import MergeConfiguration
    from mergekit.io import LazyTensorLoader
    from tqdm import tqdm

    from bai_mergekit.safetensors_stream import ShardedWriter

    config = MergeConfiguration.model_validate(cands[0].recipe(recipe).raw)
    plan = preflight(config, recipe)
    if plan.tokenizer is None:
        raise BaiMergeError(f"bai-sweep reads each tensor once and cannot re-align vocabularies "
                            f"({plan.tokenizer_reason}); run mergekit-yaml per candidate instead")
    refs = (plan.base, *plan.others)
    tables = [t if t is not None else tensor_table(ref.local_path())
              for ref, t in zip(refs, plan.tensors)]
    if any(t is None for t in tables):
        raise BaiMergeError("bai-sweep reads safetensors checkpoints only; run mergekit-yaml "
                            "for models stored as *.bin")
    for ref, table in zip(refs[1:], tables[1:]):
        check_same_tensors(str(plan.base), tables[0], str(ref), table)
    layout = _layout(tables[0], dtype_from_name(config.out_dtype or config.dtype))
    in_dtype = dtype_from_name(config.dtype)
    sources = [(ref, LazyTensorLoader.from_disk(ref.local_path())) for ref in refs]
    ratios = [ratio(c.weights, c.base_weight, recipe.normalize) for c in cands]
    out_dir.mkdir(parents=True, exist_ok=True)
    LOG.info("bai-sweep: %d candidates, %d tensors", len(cands), len(layout))
    with contextlib.ExitStack() as stack:
        tmps = [stack.enter_context(atomic_directory(out_dir / c.name, tool="bai-sweep"))
                for c in cands]
        # Chunks are written as they are merged, on this thread: writer threads with whole
        # tensors were measured slower at 3B on 2 cores (docs/benchmarks.md)
        writers = [ShardedWriter(t, layout, max_shard_size) for t in tmps]
        for spec in tqdm(layout, desc=f"Merging {len(cands)} candidates", disable=quiet):
            _merge_tensor(spec, sources, ratios, writers, in_dtype)
        for tmp, cand, writer in zip(tmps, cands, writers):
            writer.close()
            cand_recipe = cand.recipe(recipe)
            text = yaml.safe_dump(cand_recipe.raw, sort_keys=False)
            (tmp / "mergekit_config.yml").write_text(text, encoding="utf-8")
            card = generate_card(MergeConfiguration.model_validate(cand_recipe.raw), text,
                                 cand.name)
            finish_output(tmp, cand.name, dataclasses.replace(plan, recipe=cand_recipe), card)
    tmp_index = out_dir / f".{INDEX}.partial"
    tmp_index.write_text(json.dumps(sweep_index(recipe_path, recipe, cands), indent=2))
    tmp_index.replace(out_dir / INDEX)
    return [out_dir / c.name for c in cands]


def _layout(table: dict, out_dtype: torch.dtype | None) -> list[TensorSpec]:
    """Every output tensor's name, shape and dtype, from the base's safetensors headers."""
    from bai_mergekit.safetensors_stream import SAFETENSORS_DTYPES, TensorSpec

    by_dtype = {v: k for k, v in SAFETENSORS_DTYPES.items()}
    specs = []
    for name, (shape, stored) in table.items():
        dtype = by_dtype.get(stored)
        if dtype is None:
            raise BaiMergeError(f"tensor {name!r} has dtype {stored}, which bai-sweep cannot write")
        specs.append(TensorSpec(name, shape, out_dtype if dtype.is_floating_point
                                and out_dtype else dtype))
    return specs


def _merge_tensor(spec: TensorSpec, sources, ratios, writers, in_dtype) -> None:
    """Read tensor `spec.name` from each input once; stream every candidate's chunks out."""
    import torch

    tensors = [loader.get_tensor(spec.name) for _, loader in sources]
    tensors = [t.to(in_dtype) for t in tensors] if in_dtype is not None else tensors
    base, others = tensors[0], tensors[1:]
    if not base.is_floating_point() or base.numel() == 0:
        for writer in writers:
            writer.write(spec.name, base.to(spec.dtype))
        return
    for _, _, chunks in bai_merge_chunks(base, others, ratios, spec.dtype):
        # A NaN/Inf input reaches every output (0 * NaN is NaN): one chunk sum checks it.
        if not bool(torch.isfinite(chunks[0].sum())):
            raise nonfinite_error(spec.name, [(str(ref), t)
                                              for (ref, _), t in zip(sources, tensors)])
        for writer, chunk in zip(writers, chunks):
            writer.write(spec.name, chunk)
