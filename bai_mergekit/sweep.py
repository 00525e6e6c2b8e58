"""`bai-sweep`: K candidate actors over a (weight, base_weight) grid, reading the inputs once."""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import click
import torch
import yaml
from mergekit.common import ModelReference, dtype_from_name, parse_kmb
from mergekit.config import MergeConfiguration
from mergekit.io import LazyTensorLoader
from safetensors import safe_open
from tqdm import tqdm

from bai_mergekit.card import card_section
from bai_mergekit.errors import BaiMergeError
from bai_mergekit.finalize import TOKENIZER_FILES, write_card
from bai_mergekit.formula import bai_merge_chunks, coefficients
from bai_mergekit.output import atomic_directory
from bai_mergekit.preflight import check_vocabulary, preflight
from bai_mergekit.safetensors_stream import SAFETENSORS_DTYPES, ShardedWriter, TensorSpec

LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class Candidate:
    """One grid point: stage-1 weights (one per non-base model) and alpha."""

    weights: tuple[float, ...]
    base_weight: float

    @property
    def name(self) -> str:
        w = "_".join(f"{x:g}" for x in self.weights)
        return f"bai-a{self.base_weight:g}-w{w}"


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise BaiMergeError(f"not a comma-separated list of numbers: {text!r}") from None


def candidate_config(recipe: dict, cand: Candidate) -> dict:
    """The recipe with this candidate's scalar ratios: `mergekit-yaml` reproduces the output."""
    cfg = json.loads(json.dumps(recipe))
    cfg.setdefault("parameters", {})["base_weight"] = cand.base_weight
    for model, weight in zip(cfg["models"], cand.weights):
        model.setdefault("parameters", {})["weight"] = weight
    return cfg


def grid(recipe: MergeConfiguration, base_weights, weight_sets) -> list[Candidate]:
    """Cartesian grid; the recipe's own scalar values fill whatever axis is not given."""
    n = len(recipe.models or [])
    if not weight_sets:
        weight_sets = [
            tuple((m.parameters or {}).get("weight", 1.0) for m in recipe.models or [])
        ]
    if not base_weights:
        base_weights = [(recipe.parameters or {}).get("base_weight", 0.5)]
    cands = []
    for weights, alpha in itertools.product(weight_sets, base_weights):
        if len(weights) != n or not all(isinstance(w, (int, float)) for w in weights):
            raise BaiMergeError(f"each --weights needs {n} numbers (one per model), got {weights}")
        if isinstance(alpha, list):
            raise BaiMergeError("bai-sweep takes scalar ratios, not per-layer gradients")
        coefficients(weights, alpha)  # validates both
        cands.append(Candidate(tuple(float(w) for w in weights), float(alpha)))
    return list(dict.fromkeys(cands))


def _loader(ref: ModelReference) -> LazyTensorLoader:
    return LazyTensorLoader.from_disk(ref.local_path())


def run_sweep(
    recipe_path: Path,
    out_dir: Path,
    base_weights: list[float],
    weight_sets: list[tuple[float, ...]],
    max_shard_size: int = 1000**3,
    quiet: bool = False,
) -> list[Path]:
    """Write one complete model dir per candidate; every input tensor is read exactly once."""
    recipe_text = recipe_path.read_text(encoding="utf-8")
    recipe = yaml.safe_load(recipe_text)
    config = MergeConfiguration.model_validate(recipe)
    if config.merge_method != "bai":
        raise BaiMergeError(f"bai-sweep needs `merge_method: bai`, got {config.merge_method!r}")
    cands = grid(config, base_weights, weight_sets)
    plans = [
        preflight(MergeConfiguration.model_validate(candidate_config(recipe, c)))
        for c in cands
    ]
    plan = plans[0]
    configs = {ref: ref.config().to_dict() for ref in (plan.base, *plan.others)}
    try:
        check_vocabulary(config.model_copy(update={"tokenizer": None, "tokenizer_source": None}),
                         configs, plan.base)
    except BaiMergeError as error:
        raise BaiMergeError(
            f"bai-sweep reads each tensor once and cannot re-align vocabularies ({error.message}); "
            "run mergekit-yaml per candidate instead"
        ) from None
    out_dtype = dtype_from_name(config.out_dtype or config.dtype)
    in_dtype = dtype_from_name(config.dtype)
    normalize = bool((config.parameters or {}).get("normalize", True))
    sources = [(ref, _loader(ref)) for ref in (plan.base, *plan.others)]
    layout = _layout(sources[0][1], out_dtype)
    out_dir.mkdir(parents=True, exist_ok=True)
    LOG.info("bai-sweep: %d candidates, %d tensors", len(cands), len(layout))
    ratios = [(c.weights, c.base_weight) for c in cands]
    with contextlib.ExitStack() as stack:
        tmps = [stack.enter_context(atomic_directory(out_dir / c.name)) for c in cands]
        writers = [ShardedWriter(t, layout, max_shard_size) for t in tmps]
        for spec in tqdm(layout, desc=f"Merging {len(cands)} candidates", disable=quiet):
            _merge_tensor(spec, sources, ratios, writers, in_dtype, normalize)
        for tmp, cand, cand_plan, writer in zip(tmps, cands, plans, writers):
            writer.close()
            _finish_dir(tmp, out_dir / cand.name, recipe, cand, cand_plan, config)
    index = [{"path": c.name, "base_weight": c.base_weight, "weights": c.weights} for c in cands]
    (out_dir / "sweep.json").write_text(json.dumps({"candidates": index}, indent=2))
    return [out_dir / c.name for c in cands]


def _layout(loader: LazyTensorLoader, out_dtype: torch.dtype | None) -> list[TensorSpec]:
    """Every output tensor's name, shape and dtype, read from the base's safetensors headers."""
    by_dtype = {v: k for k, v in SAFETENSORS_DTYPES.items()}
    specs = []
    for name, shard in loader.index.tensor_paths.items():
        path = os.path.join(loader.index.base_path, shard)
        if not path.endswith(".safetensors"):
            raise BaiMergeError(f"bai-sweep reads safetensors checkpoints only, got {path}")
        with safe_open(path, "pt") as handle:
            view = handle.get_slice(name)
            dtype = by_dtype[view.get_dtype()]
            shape = tuple(view.get_shape())
        specs.append(TensorSpec(name, shape, out_dtype if dtype.is_floating_point and out_dtype
                                else dtype))
    return specs


def _merge_tensor(spec: TensorSpec, sources, ratios, writers, in_dtype, normalize) -> None:
    """Read tensor `spec.name` from each input once; stream every candidate's chunks out."""
    tensors = []
    for _, loader in sources:
        tensor = loader.get_tensor(spec.name)
        tensors.append(tensor.to(in_dtype) if in_dtype is not None else tensor)
    base, others = tensors[0], tensors[1:]
    if not base.is_floating_point() or base.numel() == 0:
        for writer in writers:
            writer.write(spec.name, base.to(spec.dtype))
        return
    for _, _, chunks in bai_merge_chunks(base, others, ratios, normalize, spec.dtype):
        # A NaN/Inf input reaches every output (0 * NaN is NaN): one chunk sum checks it.
        if not bool(torch.isfinite(chunks[0].sum())):
            bad = [str(ref) for (ref, _), t in zip(sources, tensors)
                   if not torch.isfinite(t).all()]
            where = ", ".join(bad) if bad else "the weighted sum overflowed"
            raise BaiMergeError(f"NaN/Inf in input tensor {spec.name!r}: {where}")
        for writer, chunk in zip(writers, chunks):
            writer.write(spec.name, chunk)


def _finish_dir(tmp: Path, final: Path, recipe: dict, cand: Candidate, plan, config) -> None:
    """config, generation config and tokenizer from the config source; card with the ratios."""
    cand_cfg = candidate_config(recipe, cand)
    cand_yaml = yaml.safe_dump(cand_cfg, sort_keys=False)
    (tmp / "mergekit_config.yml").write_text(cand_yaml)
    src = Path(plan.config_source.local_path())
    cfg = json.loads((src / "config.json").read_text())
    if config.out_dtype or config.dtype:
        cfg["torch_dtype"] = config.out_dtype or config.dtype
    (tmp / "config.json").write_text(json.dumps(cfg, indent=2))
    for file in ("generation_config.json", *TOKENIZER_FILES):
        if (src / file).is_file():
            shutil.copy(src / file, tmp / file)
    header = f"# {final.name}\n\nA `bai-sweep` candidate.\n\n```yaml\n{cand_yaml}```\n"
    (tmp / "README.md").write_text(header)
    write_card(tmp, final.name, card_section(MergeConfiguration.model_validate(cand_cfg), plan))


@click.command("bai-sweep")
@click.argument("recipe", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--base-weight", "base_weights", default="",
              help="Comma-separated alphas, e.g. 0.1,0.3,0.5,0.7,0.9 (default: the recipe's).")
@click.option("--weights", "weight_sets", multiple=True,
              help="Stage-1 weights, one per model, e.g. 0.5,0.5; repeat for more sets.")
@click.option("--out-shard-size", default="1B", show_default=True,
              help="Shard size; K writers each buffer up to one shard in memory.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def main(recipe: Path, out_dir: Path, base_weights: str, weight_sets: tuple[str, ...],
         out_shard_size: str, quiet: bool) -> None:
    """Write K candidate BAI actors from one `merge_method: bai` RECIPE into OUT_DIR."""
    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    paths = run_sweep(recipe, out_dir, list(_floats(base_weights)),
                      [_floats(w) for w in weight_sets], parse_kmb(out_shard_size), quiet=quiet)
    for path in paths:
        click.echo(str(path))


if __name__ == "__main__":
    main()
