"""Post-merge fix-ups inside the (still hidden) output dir: config source and model card."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from transformers import AutoConfig

from bai_mergekit.preflight import MergePlan

LOG = logging.getLogger(__name__)
# Fields mergekit sets on the output config from the merge itself; everything else
# (context length, rope scaling, special token ids) comes from the chosen config source.
MERGE_OWNED_FIELDS = ("vocab_size", "dtype", "torch_dtype")
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
    "chat_template.jinja",
    "chat_template.json",
)


def write_config(
    out_dir: Path, plan: MergePlan, cache_dir: str | None = None, copy_tokenizer: bool = False
) -> None:
    """Rewrite config.json from the config source, keeping the fields the merge determined.

    With `copy_tokenizer` (no `tokenizer:` block and ids checked identical) the config
    source's tokenizer files and chat template replace the base's copy.
    """
    if plan.config_source == plan.base:
        return
    produced = AutoConfig.from_pretrained(out_dir)
    config = plan.config_source.config()
    for field in MERGE_OWNED_FIELDS:
        if hasattr(produced, field):
            setattr(config, field, getattr(produced, field))
    config.save_pretrained(out_dir)
    source_dir = Path(plan.config_source.local_path(cache_dir=cache_dir))
    names = ["generation_config.json"] + (list(TOKENIZER_FILES) if copy_tokenizer else [])
    copied = []
    for name in names:
        if (source_dir / name).is_file():
            shutil.copy(source_dir / name, out_dir / name)
            copied.append(name)
    LOG.info("config.json, %s from %s", ", ".join(copied), plan.config_source)


def write_card(out_dir: Path, final_name: str, section: str) -> None:
    """Append the BAI section to mergekit's README.md and fix the temp dir name in it."""
    readme = out_dir / "README.md"
    text = readme.read_text(encoding="utf-8") if readme.is_file() else f"# {final_name}\n"
    text = text.replace(out_dir.name, final_name)
    readme.write_text(text + section, encoding="utf-8")
