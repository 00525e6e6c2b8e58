"""Finishes an output folder the same way for mergekit-yaml and bai-sweep: config.json,
generation config, tokenizer and model card, so one ratio gives the same files from both."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

from bai_mergekit.formula import coefficients
from bai_mergekit.method import PAPER_URL
from bai_mergekit.preflight import MergePlan

LOG = logging.getLogger(__name__)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "added_tokens.json", "tokenizer.model", "vocab.json", "merges.txt",
                   "chat_template.jinja", "chat_template.json")


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def write_config(out: Path, plan: MergePlan, cache_dir: str | None = None) -> None:
    """config.json: the config source's file as it is, but for the fields the merge decides
    (the vocabulary size of the written embeddings, the dtype); generation_config.json: the
    config source's (none if it has none)."""
    source = Path(plan.config_source.local_path(cache_dir=cache_dir))
    base = _read_json(Path(plan.base.local_path(cache_dir=cache_dir)) / "config.json")
    config = _read_json(source / "config.json")
    # rows merged by id keep the inputs' (padded) vocabulary; else mergekit set the size
    produced = base if plan.tokenizer is not None else _read_json(out / "config.json")
    config["vocab_size"] = produced.get("vocab_size", config.get("vocab_size"))
    dtype = plan.recipe.dtype or base.get("dtype") or base.get("torch_dtype")
    for key in {"dtype", *(k for k in ("torch_dtype",) if k in config)} if dtype else ():
        config[key] = dtype
    (out / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n",
                                     encoding="utf-8")
    generation = source / "generation_config.json"
    (out / generation.name).unlink(missing_ok=True)
    if generation.is_file():
        shutil.copy(generation, out / generation.name)


def write_tokenizer(out: Path, plan: MergePlan, cache_dir: str | None = None) -> None:
    """The tokenizer files of `plan.tokenizer` (rows merged by id), and the recipe's
    `chat_template:` applied as mergekit applies it; mergekit's own when it aligned rows."""
    if plan.tokenizer is None:
        return
    source = Path(plan.tokenizer.local_path(cache_dir=cache_dir))
    for name in TOKENIZER_FILES:
        (out / name).unlink(missing_ok=True)
        if (source / name).is_file():
            shutil.copy(source / name, out / name)
    if plan.recipe.raw.get("chat_template"):
        from mergekit.config import MergeConfiguration
        from mergekit.merge import _set_chat_template
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(out))
        _set_chat_template(tokenizer, MergeConfiguration.model_validate(plan.recipe.raw))
        tokenizer.save_pretrained(str(out))
    LOG.info("tokenizer from %s (%s)", plan.tokenizer, plan.tokenizer_reason)


def card_section(plan: MergePlan) -> str:
    """The BAI section of the model card: method, paper, ratios, config and tokenizer source."""
    recipe = plan.recipe
    lines = [
        "", "## Balanced Actor Initialization (BAI)", "",
        f"Merged with `merge_method: bai` ([arXiv 2509.00309]({PAPER_URL})):",
        "`M = alpha * M_base + (1 - alpha) * sum_i w_i M_i / sum_i w_i`, in one fp32 pass.", "",
        f"- base model (alpha = `base_weight` = {recipe.base_weight}): `{recipe.base}`",
        *(f"- `{name}`: weight {w}" for name, w in zip(recipe.models, recipe.weights)),
        f"- normalize: {recipe.normalize}",
    ]
    ratios = recipe.scalar_ratios()
    if ratios:
        c_base, c_models = coefficients(*ratios, recipe.normalize)
        lines.append("- effective coefficients (sum to 1 when normalized):")
        for name, coef in zip((recipe.base, *recipe.models), (c_base, *c_models)):
            lines.append(f"  - `{name}`: {coef:.6g}")
    else:
        lines.append("- ratios vary per layer (gradient or filter): see the config above")
    lines.append(f"- config.json from `{plan.config_source}` ({plan.config_reason})")
    lines.append(f"- tokenizer from `{plan.tokenizer}` ({plan.tokenizer_reason})" if plan.tokenizer
                 else f"- tokenizer: {plan.tokenizer_reason}")
    return "\n".join(lines) + "\n"


def finish_output(out: Path, final_name: str, plan: MergePlan, card: str | None = None,
                  cache_dir: str | None = None, copy_tokenizer: bool = True) -> None:
    """Config, generation config, tokenizer and the model card (`card`, else the README.md
    mergekit wrote, else a title, plus the BAI section) of the still hidden output `out`."""
    write_config(out, plan, cache_dir)
    if copy_tokenizer:
        write_tokenizer(out, plan, cache_dir)
    readme = out / "README.md"
    if card is None:
        card = readme.read_text(encoding="utf-8") if readme.is_file() else f"# {final_name}\n"
    readme.write_text(card.replace(out.name, final_name) + card_section(plan), encoding="utf-8")
