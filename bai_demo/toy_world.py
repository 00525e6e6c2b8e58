"""`bai-toy-world`: a real trained base / instruct / reasoning family on n-digit addition."""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bai_core.cli import BaiError, UsageError, add_verbose, tool_main
from bai_demo.toy_task import (
    TaskSpec,
    direct_answer,
    heldout_problems,
    reasoning_answer,
    rl_train_problems,
    training_stream,
    write_prompt_file,
)
from bai_demo.toy_train import ModelSpec, StageSpec

LOG = logging.getLogger(__name__)
PROG = "bai-toy-world"
FORMAT_VERSION = 3  # bump when the code changes what a recipe builds
# the raw pretraining (stage 1 of the base) is unchanged since format 2: families of format >= 2
# with the same task, model, base stage and seed share its weights (see _cached_base)
PRETRAIN_FORMAT = 2
MANIFEST = "toy_world.json"
ROLES = ("base", "instruct", "reasoning")
CACHE_ENV = "BAI_TOY_WORLD_CACHE"
THREADS_ENV = "BAI_TOY_WORLD_THREADS"  # torch threads for training (default 1: these matmuls
# are too small to gain from a second thread, and lose badly when the cores are shared)


@dataclass(frozen=True)
class WorldRecipe:
    """Everything that decides the family's weights; its hash names the cache folder."""

    name: str
    task: TaskSpec = field(default_factory=TaskSpec)
    model: ModelSpec = field(default_factory=ModelSpec)
    base: StageSpec = StageSpec(steps=1000, lr=2e-3)
    # the base's second stage (mid-training): raw text mixed with chat-formatted sums answered
    # in both styles (direct and <think> trace, equal shares); `mid_chat_share` of each batch
    mid: StageSpec | None = StageSpec(steps=150, lr=1e-3)
    mid_chat_share: float = 0.5
    instruct: StageSpec = StageSpec(steps=60, lr=1e-3)
    reasoning: StageSpec = StageSpec(steps=200, lr=1e-3)
    seed: int = 0

    def to_dict(self) -> dict:
        return {"format_version": FORMAT_VERSION, **asdict(self)}

    @property
    def key(self) -> str:
        """Content hash of the recipe (16 hex digits)."""
        blob = json.dumps(self.to_dict(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]



FULL = WorldRecipe(name="full")
SMALL = WorldRecipe(
    name="small",
    task=TaskSpec(max_digits=3, digit_weights=(1 / 3, 1 / 3, 1 / 3), heldout_size=96,
                  rl_train_size=256),
    base=StageSpec(steps=800, lr=2e-3),
    mid=StageSpec(steps=100, lr=1e-3),
    instruct=StageSpec(steps=40, lr=1e-3),
    reasoning=StageSpec(steps=150, lr=1e-3),
)
RECIPES = {"full": FULL, "small": SMALL}


@dataclass(frozen=True)
class Family:
    """A built family: the three role folders and the prompt files."""

    root: Path

    def role(self, name: str) -> Path:
        return self.root / name

    @property
    def base(self) -> Path:
        return self.root / "base"

    @property
    def instruct(self) -> Path:
        return self.root / "instruct"

    @property
    def reasoning(self) -> Path:
        return self.root / "reasoning"

    @property
    def train_prompts(self) -> Path:
        return self.root / "prompts" / "train.jsonl"

    @property
    def heldout_prompts(self) -> Path:
        return self.root / "prompts" / "heldout.jsonl"

    @property
    def manifest(self) -> dict:
        return json.loads((self.root / MANIFEST).read_text())

    def paths(self) -> dict[str, Path]:
        return {**{r: self.role(r) for r in ROLES}, "train_prompts": self.train_prompts,
                "heldout_prompts": self.heldout_prompts}


def cache_root() -> Path:
    """$BAI_TOY_WORLD_CACHE, else ~/.cache/bai/toy-world."""
    env = os.environ.get(CACHE_ENV, "").strip()
    return Path(env).expanduser() if env else Path.home() / ".cache" / "bai" / "toy-world"


def _complete(root: Path, recipe: WorldRecipe) -> bool:
    try:
        manifest = json.loads((root / MANIFEST).read_text())
    except (OSError, ValueError):
        return False
    return manifest.get("key") == recipe.key and all(
        (root / r / "model.safetensors").is_file() for r in ROLES)


def _base_part(recipe: dict) -> dict:
    return {k: recipe.get(k) for k in ("task", "model", "base", "seed")}


def _cached_base(recipe: WorldRecipe, *folders: Path) -> tuple[Path, dict] | None:
    """The raw-pretrained model of a complete family in one of `folders` pretrained by the same
    recipe (pretraining is most of a build; the later stages are what recipes change):
    `pretrained/` of a family with a mid-training stage, else its `base/`."""
    want = _base_part(json.loads(json.dumps(recipe.to_dict())))
    manifests = [m for f in dict.fromkeys(folders) for m in sorted(f.glob(f"*/{MANIFEST}"))]
    for manifest in manifests:
        try:
            data = json.loads(manifest.read_text())
            same = _base_part(data["recipe"]) == want and \
                data["recipe"]["format_version"] >= PRETRAIN_FORMAT
            stats = data["stages"]["pretrain" if data["recipe"].get("mid") else "base"]
        except (OSError, ValueError, KeyError, AttributeError, TypeError):
            continue
        model = manifest.parent / ("pretrained" if data["recipe"].get("mid") else "base")
        if same and (model / "model.safetensors").is_file():
            return model, {**stats, "reused_from": manifest.parent.name}
    return None


def mid_training_batches(tokenizer, task: TaskSpec, seed: int, exclude: set, chat_share: float):
    """The base's mid-training mix: raw documents, plus `chat_share` of each batch as
    chat-formatted sums, half answered directly and half with the <think> trace (so the base
    reads the chat format and knows both answer styles, as real base models are annealed on
    instruction-style data; the SFTs then pick one style)."""
    from bai_demo.toy_train import pretraining_batches, sft_batches

    raw = next(pretraining_batches(tokenizer, training_stream(task, seed + 10, exclude),
                                   seed + 10))
    direct = next(sft_batches(tokenizer, training_stream(task, seed + 11, exclude),
                              direct_answer))
    trace = next(sft_batches(tokenizer, training_stream(task, seed + 12, exclude),
                             reasoning_answer))

    def batch(size: int) -> list:
        half = round(size * chat_share / 2)
        return raw(size - 2 * half) + direct(half) + trace(half)

    while True:
        yield batch


def _train_family(tmp: Path, recipe: WorldRecipe) -> dict:
    """Train the three roles into `tmp`; returns timings and final losses."""
    import torch
    from transformers import Qwen2ForCausalLM

    from bai_demo.toy_train import (
        build_tokenizer,
        pretraining_batches,
        qwen2_config,
        save_role,
        sft_batches,
        train_stage,
    )

    torch.set_num_threads(int(os.environ.get(THREADS_ENV, "1") or 1))
    tokenizer = build_tokenizer()
    heldout = heldout_problems(recipe.task)
    exclude = set(heldout)
    write_prompt_file(tmp / "prompts" / "heldout.jsonl", heldout)
    write_prompt_file(tmp / "prompts" / "train.jsonl", rl_train_problems(recipe.task, exclude))
    stats: dict[str, dict] = {}

    start = time.monotonic()
    stage1 = "pretrain" if recipe.mid else "base"
    shared = _cached_base(recipe, tmp.parent, cache_root())
    if shared is not None:
        LOG.info("toy world %s: pretrained model reused from %s (same pretraining recipe)",
                 recipe.name, shared[0])
        base = Qwen2ForCausalLM.from_pretrained(shared[0], dtype=torch.float32)
        stats[stage1] = shared[1]
    else:
        torch.manual_seed(recipe.seed)
        base = Qwen2ForCausalLM(qwen2_config(recipe.model, tokenizer, "base"))
        loss = train_stage(base, tokenizer, pretraining_batches(
            tokenizer, training_stream(recipe.task, recipe.seed, exclude), recipe.seed),
            recipe.base, "base (pretraining)")
        stats[stage1] = {"seconds": round(time.monotonic() - start, 1), "final_loss": loss}
    if recipe.mid:
        save_role(base, tokenizer, tmp / "pretrained", "base", recipe.model)
        start = time.monotonic()
        torch.manual_seed(recipe.seed + 3)
        loss = train_stage(base, tokenizer, mid_training_batches(
            tokenizer, recipe.task, recipe.seed, exclude, recipe.mid_chat_share),
            recipe.mid, "base (mid-training)")
        stats["base"] = {"seconds": round(time.monotonic() - start, 1), "final_loss": loss}
    save_role(base, tokenizer, tmp / "base", "base", recipe.model)
    for role, answer, stage in (("instruct", direct_answer, recipe.instruct),
                                ("reasoning", reasoning_answer, recipe.reasoning)):
        torch.manual_seed(recipe.seed + 1)
        model = copy.deepcopy(base)
        start = time.monotonic()
        stream = training_stream(recipe.task, recipe.seed + (1 if role == "instruct" else 2),
                                 exclude)
        loss = train_stage(model, tokenizer, sft_batches(tokenizer, stream, answer), stage,
                           f"{role} (SFT)")
        save_role(model, tokenizer, tmp / role, role, recipe.model)
        stats[role] = {"seconds": round(time.monotonic() - start, 1), "final_loss": loss}
    return stats


def build_family(recipe: WorldRecipe = FULL, out: Path | None = None) -> Family:
    """The family of `recipe` in `out` (default: the cache folder named by the recipe hash),
    trained once: a complete folder with the same hash is reused. Built in a hidden partial
    folder beside it and renamed into place when complete."""
    root = Path(out) if out is not None else cache_root() / recipe.key
    if _complete(root, recipe):
        LOG.info("toy world %s: reusing %s", recipe.name, root)
        return Family(root)
    if root.exists() and any(root.iterdir()):
        raise BaiError(f"{root}: exists and is not a complete toy world of recipe "
                       f"{recipe.name!r} (key {recipe.key}); remove it or choose another --out")
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = root.parent / f".{root.name}.partial-{socket.gethostname()}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        start = time.monotonic()
        stats = _train_family(tmp, recipe)
        manifest = {"key": recipe.key, "recipe": recipe.to_dict(), "stages": stats,
                    "build_seconds": round(time.monotonic() - start, 1)}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
        if root.exists():
            root.rmdir()  # empty (checked above)
        try:
            tmp.rename(root)
        except OSError:
            if not _complete(root, recipe):  # a concurrent build won the rename: use it
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    LOG.info("toy world %s built in %s", recipe.name, root)
    return Family(root)


def merge_recipe_text(family: Family, alpha: float) -> str:
    """A stock `mergekit-yaml` recipe (merge_method: bai) for the BAI actor of weight alpha."""
    return (
        "merge_method: bai\n"
        f"base_model: {family.base}\n"
        "models:\n"
        f"  - model: {family.instruct}\n    parameters: {{weight: 0.5}}\n"
        f"  - model: {family.reasoning}\n    parameters: {{weight: 0.5}}\n"
        "parameters:\n"
        f"  base_weight: {alpha!r}\n"
        f"  config_source: {family.reasoning}\n"
        "dtype: float32\n"
    )


def _tool(name: str) -> str:
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.is_file() else name


def bai_actor(family: Family, alpha: float, out: Path | None = None) -> Path:
    """The BAI actor of `family` at alpha (= base_weight), merged by stock `mergekit-yaml` on a
    generated recipe; an earlier merge of the same recipe is reused."""
    if not 0.0 <= alpha <= 1.0:
        raise UsageError(f"alpha must be in [0, 1], got {alpha}")
    out = Path(out) if out is not None else family.root / "actors" / f"bai-a{alpha:g}"
    text = merge_recipe_text(family, alpha)
    recipe_path = out.parent / f"{out.name}.yaml"
    if (out / ".bai-merge.json").is_file() and recipe_path.is_file() and \
            recipe_path.read_text() == text:
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    recipe_path.write_text(text)
    proc = subprocess.run([_tool("mergekit-yaml"), str(recipe_path), str(out)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["(no output)"]
        raise BaiError(f"mergekit-yaml {recipe_path} failed ({proc.returncode}): {tail[0]}")
    return out


def _alphas(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated numbers, got {text!r}") from None
    if not values or any(not 0.0 <= v <= 1.0 for v in values):
        raise argparse.ArgumentTypeError(f"alphas must be in [0, 1], got {text!r}")
    return values


def build_parser() -> argparse.ArgumentParser:
    """Command line of bai-toy-world."""
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Train (once, cached by recipe hash) a tiny Qwen2 family on n-digit "
        "addition: base (pretrained on raw text), instruct (SFT, direct answers) and reasoning "
        "(SFT on a teacher program's <think> carry traces); print the paths.")
    sub = p.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="build or reuse the family and print its paths")
    b.add_argument("--small", action="store_true", help="the small test family (about 1 min)")
    b.add_argument("--out", type=Path, help="family folder (default: the cache, "
                   f"${CACHE_ENV} or ~/.cache/bai/toy-world/<recipe hash>)")
    b.add_argument("--alpha", type=_alphas, default=[], metavar="A[,A...]",
                   help="also merge BAI actors at these base weights (stock mergekit-yaml)")
    b.add_argument("--json", action="store_true", help="print the paths as JSON")
    add_verbose(b)
    return p


def _build(args: argparse.Namespace) -> int:
    recipe = SMALL if args.small else FULL
    family = build_family(recipe, args.out)
    paths = {k: str(v) for k, v in family.paths().items()}
    for alpha in args.alpha:
        paths[f"bai-a{alpha:g}"] = str(bai_actor(family, alpha))
    if args.json:
        print(json.dumps({"recipe": recipe.name, "key": recipe.key, "root": str(family.root),
                          "paths": paths}, indent=1))
    else:
        width = max(len(k) for k in paths)
        print("\n".join(f"{k.ljust(width)}  {v}" for k, v in paths.items()))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `bai-toy-world`."""
    return tool_main(PROG, build_parser(), _build, argv, log_format="%(name)s: %(message)s")


if __name__ == "__main__":
    sys.exit(main())
