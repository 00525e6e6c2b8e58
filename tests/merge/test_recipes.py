"""Shipped merge recipes: one family, R's config and tokenizer, and they merge when run."""

import re
from pathlib import Path

import pytest
import yaml
from mergekit.config import MergeConfiguration
from mergekit.merge import run_merge
from mergekit.options import MergeOptions

from bai_mergekit.recipe import parse_recipe_text

RECIPES = sorted((Path(__file__).parents[2] / "recipes").glob("bai*.yaml"))


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_recipe_is_one_public_family_with_reasoning_config_and_tokenizer(path):
    cfg = MergeConfiguration.model_validate(yaml.safe_load(path.read_text()))
    assert cfg.merge_method == "bai"
    parse_recipe_text(path.read_text(), str(path))  # the strict reader both tools use
    reasoning = str(cfg.models[-1].model)
    size = re.fullmatch(r"deepseek-ai/DeepSeek-R1-Distill-Qwen-([\d.]+B)", reasoning).group(1)
    family = "Qwen2.5-Math" if size in ("1.5B", "7B") else "Qwen2.5"
    assert str(cfg.base_model) == f"Qwen/{family}-{size}"
    assert str(cfg.models[0].model) == f"Qwen/{family}-{size}-Instruct"
    assert cfg.parameters["config_source"] == reasoning
    assert str(cfg.tokenizer.source) == reasoning
    assert [m.parameters["weight"] for m in cfg.models] == [0.5, 0.5]


def test_there_is_a_balanced_and_an_alpha_point_one_recipe():
    alphas = {yaml.safe_load(p.read_text())["parameters"]["base_weight"] for p in RECIPES}
    assert {0.5, 0.1} <= alphas


@pytest.mark.parametrize("path", [*RECIPES, RECIPES[0].parent / "demo.yaml"], ids=lambda p: p.name)
def test_recipe_merges_when_its_models_are_local(path, family, tmp_path):
    """Swap hub ids for the tiny family: the recipe's own blocks (tokenizer, config) run."""
    text = path.read_text()
    raw = yaml.safe_load(text)
    roles = {raw["base_model"]: "base", raw["models"][0]["model"]: "instruct",
             raw["models"][1]["model"]: "reasoning"}
    for ref, role in sorted(roles.items(), key=lambda kv: -len(kv[0])):
        text = text.replace(ref, str(family[role]))
    out = tmp_path / "actor"
    run_merge(MergeConfiguration.model_validate(yaml.safe_load(text)), str(out),
              options=MergeOptions(quiet=True), config_source=text)
    assert (out / "model.safetensors").is_file() and (out / "chat_template.jinja").is_file()
    assert "config.json from" in (out / "README.md").read_text()
