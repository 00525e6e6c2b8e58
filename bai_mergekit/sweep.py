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
from typing import TYPE_CHECKING, Any

import click

from bai_mergekit.cli import TRACEBACK_ENV, cli_errors
from bai_mergekit.errors import BaiMergeError
from bai_mergekit.recipe import (
    Recipe,
    check_identities,
    check_setting,
    parse_recipe,
    parse_recipe_text,
    resolve,
)

if TYPE_CHECKING:  # torch and mergekit load only once the recipe has passed its checks
    import torch
    from mergekit.common import ModelReference
    from mergekit.io import LazyTensorLoader

    from bai_mergekit.preflight import MergePlan
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


def _floats(text: str, what: str = "--base-weight") -> tuple[float, ...]:
    items = [x.strip() for x in text.split(",")]
    if text.strip() == "":
        return ()
    try:
        return tuple(float(x) for x in items)
    except ValueError:
        raise BaiMergeError(f"{what} must be comma-separated numbers, got {text!r}") from None


def candidate_config(recipe: dict, cand: Candidate) -> dict:
    """The recipe with this candidate's scalar ratios: `mergekit-yaml` reproduces the output."""
    cfg = json.loads(json.dumps(recipe))
    if cfg.get("parameters") is None:
        cfg["parameters"] = {}
    cfg["parameters"]["base_weight"] = cand.base_weight
    for model, weight in zip(cfg["models"], cand.weights):
        if model.get("parameters") is None:
            model["parameters"] = {}
        model["parameters"]["weight"] = weight
    return cfg


def grid(recipe: Recipe, base_weights, weight_sets) -> list[Candidate]:
    """Cartesian grid; the recipe's own scalar values fill whatever axis is not given."""
    n = len(recipe.models)
    if not weight_sets:
        if not all(isinstance(w, (int, float)) for w in recipe.weights):
            raise BaiMergeError("bai-sweep takes scalar ratios, not per-layer gradients or "
                                f"filters: the recipe's weights are {list(recipe.weights)}")
        weight_sets = [tuple(recipe.weights)]
    if not base_weights:
        if not isinstance(recipe.base_weight, (int, float)):
            raise BaiMergeError("bai-sweep takes scalar ratios, not per-layer gradients or "
                                f"filters: the recipe's base_weight is {recipe.base_weight!r}")
        base_weights = [recipe.base_weight]
    cands = []
    for weights, alpha in itertools.product(weight_sets, base_weights):
        if len(weights) != n:
            raise BaiMergeError(f"each --weights needs {n} numbers (one per model), got "
                                f"{','.join(f'{w:g}' for w in weights)}")
        check_setting(alpha, "base_weight", 0.0, 1.0)
        for w in weights:
            check_setting(w, "--weights value", 0.0)
        if recipe.normalize and sum(weights) == 0:
            raise BaiMergeError(f"weights must not all be zero, got {list(weights)}")
        cands.append(Candidate(tuple(float(w) for w in weights), float(alpha)))
    cands = list(dict.fromkeys(cands))
    names = [c.name for c in cands]
    if len(set(names)) != len(names):
        raise BaiMergeError(f"two grid points share one folder name: {names}")
    return cands


def _ours(entry: Path) -> bool:
    """sweep.json, a candidate folder or a partial one that bai-sweep wrote."""
    from bai_mergekit.output import MARKER, OLD_MARK, PARTIAL_MARK

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
        raise BaiMergeError(
            f"output folder {out_dir} exists and is not an earlier bai-sweep output (it holds "
            f"{len(foreign)} entries bai-sweep did not write: {', '.join(foreign[:5])}); "
            "choose a new folder"
        )


def _input_entry(name: str) -> dict[str, Any]:
    kind, where = resolve(name)
    return {"model": name, "path": where if kind == "path" else None,
            "hub_id": where if kind == "hub" else None}


def sweep_index(recipe_path: Path, recipe: Recipe, cands: list[Candidate]) -> dict[str, Any]:
    """sweep.json: the inputs (yaml names and resolved paths) and every candidate's ratios."""
    from bai_mergekit.formula import coefficients

    entries = []
    for c in cands:
        c_base, c_models = coefficients(c.weights, c.base_weight, recipe.normalize)
        total = sum(c.weights) if recipe.normalize else 1.0
        entries.append({
            "path": c.name,
            "base_weight": c.base_weight,
            "weights": list(c.weights),
            "weights_normalized": [w / total for w in c.weights],
            "weights_by_model": dict(zip(recipe.models, c.weights)),
            "coefficients": {"base": c_base, "models": c_models},
        })
    return {
        "tool": "bai-sweep",
        "format": INDEX_FORMAT,
        "recipe": str(recipe_path.absolute()),
        "normalize": recipe.normalize,
        "config_source": recipe.config_source,
        "base_model": _input_entry(recipe.base),
        "models": [_input_entry(m) for m in recipe.models],
        "candidates": entries,
    }


def _loader(ref: ModelReference) -> LazyTensorLoader:
    from mergekit.io import LazyTensorLoader

    return LazyTensorLoader.from_disk(ref.local_path())



def _read_recipe(recipe_path: Path) -> Recipe:
    try:
        text = recipe_path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise BaiMergeError(f"cannot read recipe {recipe_path}: {error}") from None
    return parse_recipe_text(text, f"recipe {recipe_path}")


def run_sweep(
    recipe_path: Path,
    out_dir: Path,
    base_weights: list[float],
    weight_sets: list[tuple[float, ...]],
    max_shard_size: int = 1000**3,
    quiet: bool = False,
) -> list[Path]:
    """Write one complete model dir per candidate; every input tensor is read exactly once."""
    recipe_path, out_dir = Path(recipe_path), Path(out_dir)
    recipe = _read_recipe(recipe_path)
    if max_shard_size <= 0:
        raise BaiMergeError(f"--out-shard-size must be positive, got {max_shard_size}")
    cands = grid(recipe, base_weights, weight_sets)
    cand_cfgs = [candidate_config(recipe.raw, c) for c in cands]
    for cfg in cand_cfgs:  # what mergekit-yaml will read from each mergekit_config.yml
        parse_recipe(cfg)
    check_identities(recipe)
    from bai_mergekit.inputs import read_model_config, tensor_table
    from bai_mergekit.output import check_output_location, check_replaceable, clean_stale

    for name in (recipe.base, *recipe.models):  # cheap checks before torch/mergekit load
        kind, folder = resolve(name)
        if kind == "path" and os.path.isdir(folder):
            read_model_config(folder)
            tensor_table(folder)

    protected = [(f"input model {m}", resolve(m)[1]) for m in (recipe.base, *recipe.models)
                 if resolve(m)[0] == "path"]
    protected.append(("recipe file", str(recipe_path)))
    check_output_location(out_dir, protected)
    check_sweep_root(out_dir)
    for c in cands:
        clean_stale(out_dir.absolute() / c.name)
        check_replaceable(out_dir.absolute() / c.name)
    return _write_grid(recipe_path, recipe, out_dir, cands, cand_cfgs, max_shard_size, quiet)


def _write_grid(recipe_path, recipe, out_dir, cands, cand_cfgs, max_shard_size, quiet):
    from mergekit.common import dtype_from_name
    from mergekit.config import MergeConfiguration

    from bai_mergekit.inputs import check_same_tensors, tensor_table
    from bai_mergekit.preflight import check_vocabulary, preflight

    config = MergeConfiguration.model_validate(cand_cfgs[0])
    plan = preflight(config)
    configs = {ref: ref.config().to_dict() for ref in (plan.base, *plan.others)}
    try:
        check_vocabulary(config.model_copy(update={"tokenizer": None, "tokenizer_source": None}),
                         configs, plan.base)
    except BaiMergeError as error:
        raise BaiMergeError(
            f"bai-sweep reads each tensor once and cannot re-align vocabularies ({error.message}); "
            "run mergekit-yaml per candidate instead"
        ) from None
    refs = (plan.base, *plan.others)
    tables = [t if t is not None else tensor_table(ref.local_path())
              for ref, t in zip(refs, plan.tensors)]
    if any(t is None for t in tables):
        raise BaiMergeError("bai-sweep reads safetensors checkpoints only; run mergekit-yaml "
                            "for models stored as *.bin")
    for ref, table in zip(refs[1:], tables[1:]):
        check_same_tensors(str(plan.base), tables[0], str(ref), table)
    out_dtype = dtype_from_name(config.out_dtype or config.dtype)
    in_dtype = dtype_from_name(config.dtype)
    sources = [(ref, _loader(ref)) for ref in refs]
    layout = _layout(tables[0], out_dtype)
    created = not out_dir.exists()
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        return _stream(recipe_path, recipe, out_dir, cands, cand_cfgs, max_shard_size, quiet,
                       (plan, config, sources, layout, in_dtype))
    except BaseException:
        if created and out_dir.is_dir() and not any(out_dir.iterdir()):
            out_dir.rmdir()  # a folder this failed run created stays absent
        raise


def _stream(recipe_path, recipe, out_dir, cands, cand_cfgs, max_shard_size, quiet, state):
    """Merge every tensor once for all candidates, then finish each folder and the index."""
    from tqdm import tqdm

    from bai_mergekit.output import atomic_directory
    from bai_mergekit.safetensors_stream import ShardedWriter

    plan, config, sources, layout, in_dtype = state
    LOG.info("bai-sweep: %d candidates, %d tensors", len(cands), len(layout))
    ratios = [(c.weights, c.base_weight) for c in cands]
    with contextlib.ExitStack() as stack:
        tmps = [stack.enter_context(atomic_directory(out_dir / c.name, tool="bai-sweep"))
                for c in cands]
        writers = [ShardedWriter(t, layout, max_shard_size) for t in tmps]
        for spec in tqdm(layout, desc=f"Merging {len(cands)} candidates", disable=quiet):
            _merge_tensor(spec, sources, ratios, writers, in_dtype, recipe.normalize)
        for tmp, cand, cand_cfg, writer in zip(tmps, cands, cand_cfgs, writers):
            writer.close()
            _finish_dir(tmp, out_dir / cand.name, cand_cfg, plan, config)
    index = out_dir / INDEX
    tmp_index = out_dir / f".{INDEX}.partial"
    tmp_index.write_text(json.dumps(sweep_index(recipe_path, recipe, cands), indent=2))
    tmp_index.replace(index)
    return [out_dir / c.name for c in cands]


def _layout(table: dict, out_dtype: torch.dtype | None) -> list[TensorSpec]:
    """Every output tensor's name, shape and dtype, from the base's safetensors headers."""
    from bai_mergekit.safetensors_stream import SAFETENSORS_DTYPES, TensorSpec

    by_dtype = {v: k for k, v in SAFETENSORS_DTYPES.items()}
    specs = []
    for name, info in table.items():
        dtype = by_dtype.get(info.dtype)
        if dtype is None:
            raise BaiMergeError(f"tensor {name!r} has dtype {info.dtype}, which bai-sweep "
                                "cannot write")
        specs.append(TensorSpec(name, info.shape, out_dtype if dtype.is_floating_point
                                and out_dtype else dtype))
    return specs


def _merge_tensor(spec: TensorSpec, sources, ratios, writers, in_dtype, normalize) -> None:
    """Read tensor `spec.name` from each input once; stream every candidate's chunks out."""
    import torch

    from bai_mergekit.formula import bai_merge_chunks

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


def _finish_dir(tmp: Path, final: Path, cand_cfg: dict, plan: MergePlan, config) -> None:
    """config, generation config and tokenizer from the config source; card with the ratios."""
    import yaml
    from mergekit.config import MergeConfiguration

    from bai_mergekit.card import card_section
    from bai_mergekit.finalize import TOKENIZER_FILES, write_card

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


SIZE_SUFFIXES = {"k": 10**3, "m": 10**6, "b": 10**9}  # as mergekit's --out-shard-size


def _shard_size(text: str) -> int:
    """`500M`, `2B`, `1000000` -> a positive int; anything else is refused by value."""
    raw = text.strip()
    scale = SIZE_SUFFIXES.get(raw[-1:].lower(), 1)
    digits = raw[:-1] if scale != 1 else raw
    try:
        size = int(float(digits) * scale) if digits else -1
    except ValueError:
        size = -1
    if size <= 0:
        raise BaiMergeError(f"--out-shard-size must be a positive size like 500M or 2B, got "
                            f"{text!r}")
    return size


@click.command("bai-sweep", epilog=f"Any failure prints one `Error:` line and exits non-zero; "
               f"-v or {TRACEBACK_ENV}=1 adds the traceback.")
@click.argument("recipe", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("out_dir", type=click.Path(path_type=Path))
@click.option("--base-weight", "base_weights", default="",
              help="Comma-separated alphas, e.g. 0.1,0.3,0.5,0.7,0.9 (default: the recipe's).")
@click.option("--weights", "weight_sets", multiple=True,
              help="Stage-1 weights, one per model, e.g. 0.5,0.5; repeat for more sets.")
@click.option("--out-shard-size", default="1B", show_default=True,
              help="Shard size; K writers each buffer up to one shard in memory.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option("-v", "--verbose", is_flag=True, help="Log more; print tracebacks of failures.")
@click.option("--probe", is_flag=True,
              help="After the grid is written, sample every candidate (bai_tools.sweep_probe).")
@click.option("--prompts", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Prompts file for --probe (default: the probe's built-in prompts).")
@click.option("-n", "n", type=click.IntRange(min=1), default=4, show_default=True,
              help="Samples per prompt for --probe.")
@click.option("--max-tokens", type=click.IntRange(min=1), default=256, show_default=True,
              help="Generation limit for --probe.")
@click.option("--seed", type=int, default=0, show_default=True, help="Sampling seed for --probe.")
def main(recipe: Path, out_dir: Path, base_weights: str, weight_sets: tuple[str, ...],
         out_shard_size: str, quiet: bool, verbose: bool, probe: bool, prompts: Path | None,
         n: int, max_tokens: int, seed: int) -> None:
    """Write K candidate BAI actors from one `merge_method: bai` RECIPE into OUT_DIR."""
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    with cli_errors(verbose):
        alphas = list(_floats(base_weights))
        sets = [_floats(w, "--weights") for w in weight_sets]
        if prompts is not None and not prompts.is_file():
            raise BaiMergeError(f"--prompts file not found: {prompts}")
        paths = run_sweep(recipe, out_dir, alphas, sets, _shard_size(out_shard_size),
                          quiet=quiet)
        for path in paths:
            click.echo(str(path))
        if probe:
            from bai_tools.sweep_probe import probe_sweep_dir

            probe_sweep_dir(out_dir, prompts, n, max_tokens, seed)


if __name__ == "__main__":
    main()
