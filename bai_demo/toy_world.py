"""`bai-toy-world`: a real trained base / instruct / reasoning family on n-digit addition."""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
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
from bai_demo.toy_reward import RewardSpec
from bai_demo.toy_task import (
    TaskSpec,
    Teacher,
    direct_answer,
    heldout_problems,
    rl_train_problems,
    training_stream,
    write_prompt_file,
)
from bai_demo.toy_train import ModelSpec, StageSpec

LOG = logging.getLogger(__name__)
PROG = "bai-toy-world"
FORMAT_VERSION = 4  # bump when the code changes what a recipe builds
MANIFEST = "toy_world.json"
ROLES = ("base", "instruct", "reasoning")
REWARD_ROLE = "reward"  # the alignment reward model (and the PPO critic's start)
CACHE_ENV = "BAI_TOY_WORLD_CACHE"
THREADS_ENV = "BAI_TOY_WORLD_THREADS"  # torch threads for training; default: up to 2 (measured
# on 2 idle cores: 1.7x the steps per second of one thread); the tests set 1, since their
# workers share the cores and small matmuls lose badly on a busy second thread


@dataclass(frozen=True)
class WorldRecipe:
    """Everything that decides the family's weights; its hash names the cache folder.

    The skill lives in the base: it is trained from the start on raw text plus, as
    `chat_share` of each batch, chat-formatted sums answered in both styles (half direct, half
    with the teacher's trace), as real bases are annealed on instruction-style data. Short,
    low-lr SFTs then pick a style, so the roles stay in one basin and their merges keep the
    skill. The reward model starts from the base and learns instruct-kind preferences only."""

    name: str
    task: TaskSpec = field(default_factory=TaskSpec)
    model: ModelSpec = field(default_factory=ModelSpec)
    base: StageSpec = StageSpec(steps=3000, lr=2e-3)
    chat_share: float = 0.5
    # instruct at a third of the reasoning lr: at equal lrs the two SFT deltas cancel in the
    # merges (every BAI actor answered like the base, whatever alpha); measured: docs/toy-world.md
    instruct: StageSpec = StageSpec(steps=40, lr=1e-4)
    reasoning: StageSpec = StageSpec(steps=80, lr=3e-4)
    reward: RewardSpec | None = field(default_factory=RewardSpec)
    seed: int = 0

    def to_dict(self) -> dict:
        return {"format_version": FORMAT_VERSION, **asdict(self)}

    @property
    def key(self) -> str:
        """Content hash of the recipe (16 hex digits)."""
        blob = json.dumps(self.to_dict(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


FULL = WorldRecipe(name="full", task=TaskSpec(rl_train_size=4096))  # make paper: 40 x 64
SMALL = WorldRecipe(
    name="small",
    task=TaskSpec(max_digits=2, digit_weights=(0.5, 0.5), heldout_size=96, rl_train_size=256,
                  recheck_max=2),
    # 1200: at 900 base steps, built on one thread of a 2-core AMD EPYC, the reasoning model
    # scored 0.46 held-out (0.90 elsewhere); 1200 gave 0.87 there (docs/toy-world.md)
    base=StageSpec(steps=1200, lr=2e-3),
    instruct=StageSpec(steps=60, lr=1e-4),
    reward=RewardSpec(steps=150),
)
RECIPES = {"full": FULL, "small": SMALL}


@dataclass(frozen=True)
class Family:
    """A built family: the three role folders, the reward model and the prompt files."""

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
    def reward_model(self) -> Path:
        return self.root / REWARD_ROLE

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
        paths = {r: self.role(r) for r in ROLES}
        if (self.reward_model / "config.json").is_file():
            paths["reward_model"] = self.reward_model
        return {**paths, "train_prompts": self.train_prompts,
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
    roles = ROLES + ((REWARD_ROLE,) if recipe.reward else ())
    return manifest.get("key") == recipe.key and all(
        (root / r / "model.safetensors").is_file() for r in roles)


def _base_part(recipe: dict) -> dict:
    """What decides the base's weights (the RL prompt count does not: those prompts are drawn
    after training, from a stream of their own)."""
    part = {k: recipe.get(k) for k in ("format_version", "task", "model", "base", "chat_share",
                                       "seed")}
    if isinstance(part["task"], dict):
        part["task"] = {k: v for k, v in part["task"].items() if k != "rl_train_size"}
    return part


def _cached_base(recipe: WorldRecipe, *folders: Path) -> tuple[Path, dict] | None:
    """The base of a complete family in one of `folders` trained by the same base recipe (the
    base is most of a build; the SFTs and the reward model are what recipes change)."""
    want = _base_part(json.loads(json.dumps(recipe.to_dict())))
    manifests = [m for f in dict.fromkeys(folders) for m in sorted(f.glob(f"*/{MANIFEST}"))]
    for manifest in manifests:
        try:
            data = json.loads(manifest.read_text())
            same = _base_part(data["recipe"]) == want
            stats = data["stages"]["base"]
        except (OSError, ValueError, KeyError, AttributeError, TypeError):
            continue
        model = manifest.parent / "base"
        if same and (model / "model.safetensors").is_file():
            return model, {**stats, "reused_from": manifest.parent.name}
    return None


def stream_seed(recipe: WorldRecipe, part: int) -> int:
    """The seed of one training stream of a recipe (distinct per part and per recipe seed)."""
    return recipe.seed * 100 + part


def base_batches(tokenizer, task: TaskSpec, seed: int, exclude: set, chat_share: float):
    """The base's training mix: raw documents (bare equations, worked sums), plus `chat_share`
    of each batch as chat-formatted sums, half answered directly and half with the teacher's
    trace (so the base reads the chat format and knows both answer styles)."""
    from bai_demo.toy_train import pretraining_batches, sft_batches

    raw = next(pretraining_batches(tokenizer, training_stream(task, seed + 10, exclude),
                                   seed + 10))
    direct = next(sft_batches(tokenizer, training_stream(task, seed + 11, exclude),
                              direct_answer))
    trace = next(sft_batches(tokenizer, training_stream(task, seed + 12, exclude),
                             Teacher(task, seed + 12)))  # seed: stream_seed(recipe, 0)

    def batch(size: int) -> list:
        half = round(size * chat_share / 2)
        return raw(size - 2 * half) + direct(half) + trace(half)

    while True:
        yield batch


def _train_family(tmp: Path, recipe: WorldRecipe) -> dict:
    """Train the roles and the reward model into `tmp`; returns timings, losses, RM figures."""
    import torch
    from transformers import Qwen2ForCausalLM

    from bai_demo.toy_reward import (
        preference_pairs,
        reward_figures,
        save_reward_model,
        train_reward_model,
    )
    from bai_demo.toy_train import (
        build_tokenizer,
        qwen2_config,
        save_role,
        sft_batches,
        train_stage,
    )

    torch.set_num_threads(int(os.environ.get(THREADS_ENV, "") or min(2, os.cpu_count() or 1)))
    tokenizer = build_tokenizer()
    task = recipe.task
    heldout = heldout_problems(task)
    exclude = set(heldout)
    write_prompt_file(tmp / "prompts" / "heldout.jsonl", heldout)
    write_prompt_file(tmp / "prompts" / "train.jsonl", rl_train_problems(task, exclude))
    stats: dict[str, dict] = {}

    start = time.monotonic()
    shared = _cached_base(recipe, tmp.parent, cache_root())
    if shared is not None:
        LOG.info("toy world %s: base reused from %s (same base recipe)", recipe.name, shared[0])
        base = Qwen2ForCausalLM.from_pretrained(shared[0], dtype=torch.float32)
        stats["base"] = shared[1]
    else:
        torch.manual_seed(recipe.seed)
        base = Qwen2ForCausalLM(qwen2_config(recipe.model, tokenizer, "base"))
        loss = train_stage(base, tokenizer, base_batches(
            tokenizer, task, stream_seed(recipe, 0), exclude, recipe.chat_share), recipe.base,
            "base (raw text + chat sums in both styles)")
        stats["base"] = {"seconds": round(time.monotonic() - start, 1), "final_loss": loss}
    save_role(base, tokenizer, tmp / "base", "base", recipe.model)
    for part, role, answer, stage in (
            (1, "instruct", direct_answer, recipe.instruct),
            (2, "reasoning", Teacher(task, stream_seed(recipe, 2)), recipe.reasoning)):
        torch.manual_seed(stream_seed(recipe, part))
        model = copy.deepcopy(base)
        start = time.monotonic()
        stream = training_stream(task, stream_seed(recipe, part), exclude)
        loss = train_stage(model, tokenizer, sft_batches(tokenizer, stream, answer), stage,
                           f"{role} (SFT)")
        save_role(model, tokenizer, tmp / role, role, recipe.model)
        stats[role] = {"seconds": round(time.monotonic() - start, 1), "final_loss": loss}
    if recipe.reward is not None:
        torch.manual_seed(stream_seed(recipe, 4))
        start = time.monotonic()
        pairs = preference_pairs(tokenizer, training_stream(task, stream_seed(recipe, 4),
                                                            exclude),
                                 task, stream_seed(recipe, 4), recipe.reward.trace_share)
        rm = train_reward_model(base, tokenizer, pairs, recipe.reward)
        save_reward_model(rm, tokenizer, tmp / REWARD_ROLE)
        stats[REWARD_ROLE] = {"seconds": round(time.monotonic() - start, 1),
                              **reward_figures(rm, tokenizer, heldout, task)}
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
    from filelock import FileLock

    out = Path(out) if out is not None else family.root / "actors" / f"bai-a{alpha:g}"
    text = merge_recipe_text(family, alpha)
    recipe_path = out.parent / f"{out.name}.yaml"
    out.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(out.parent / f".{out.name}.lock")):  # one merge for concurrent callers
        if (out / ".bai-merge.json").is_file() and recipe_path.is_file() and \
                recipe_path.read_text() == text:
            return out
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
        "addition: base (raw text and chat sums in both styles), instruct (short SFT, direct "
        "answers), reasoning (short SFT on a teacher program's <think> carry traces) and an "
        "alignment reward model (Bradley-Terry on direct-answer pairs); print the paths.")
    sub = p.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="build or reuse the family and print its paths")
    b.add_argument("--small", action="store_true", help="the small test family (about 2 min)")
    b.add_argument("--seed", type=int, default=None,
                   help="training seed of the recipe (default: its own, 0): each seed is a "
                   "family of its own, cached by its hash")
    b.add_argument("--rm-trace-share", type=float, default=None, metavar="S",
                   help="share of think-trace pairs in the reward model's data (default 0, the "
                   "paper's case: an RM of the instruct kind)")
    b.add_argument("--out", type=Path, help="family folder (default: the cache, "
                   f"${CACHE_ENV} or ~/.cache/bai/toy-world/<recipe hash>)")
    b.add_argument("--alpha", type=_alphas, default=[], metavar="A[,A...]",
                   help="also merge BAI actors at these base weights (stock mergekit-yaml)")
    b.add_argument("--json", action="store_true", help="print the paths as JSON")
    add_verbose(b)
    return p


def _build(args: argparse.Namespace) -> int:
    with contextlib.redirect_stdout(sys.stderr):  # stdout carries the paths (or JSON) only:
        paths, recipe, family = _build_family(args)  # DeepSpeed's logger prints to stdout
    reward = family.manifest["stages"].get(REWARD_ROLE)
    if args.json:
        print(json.dumps({"recipe": recipe.name, "key": recipe.key, "seed": recipe.seed,
                          "root": str(family.root), "paths": paths, "reward_model": reward},
                         indent=1))
        return 0
    width = max(len(k) for k in paths)
    print("\n".join(f"{k.ljust(width)}  {v}" for k, v in paths.items()))
    if reward:
        print(f"reward model on {reward['problems']} held-out problems: pair accuracy "
              f"{reward['pair_accuracy_direct']:.2f} (direct answers), "
              f"{reward['pair_accuracy_trace']:.2f} (think traces); mean score "
              f"{reward['score_direct_correct']:+.2f} / {reward['score_direct_wrong']:+.2f} "
              f"(direct right / wrong), {reward['score_trace_correct']:+.2f} / "
              f"{reward['score_trace_wrong']:+.2f} (trace right / wrong)")
    return 0


def _build_family(args: argparse.Namespace) -> tuple[dict[str, str], WorldRecipe, Family]:
    recipe = SMALL if args.small else FULL
    if args.seed is not None:
        recipe = dataclasses.replace(recipe, seed=args.seed)
    if args.rm_trace_share is not None:
        if not 0.0 <= args.rm_trace_share <= 1.0:
            raise UsageError(f"--rm-trace-share must be in [0, 1], got {args.rm_trace_share}")
        recipe = dataclasses.replace(recipe, reward=dataclasses.replace(
            recipe.reward or RewardSpec(), trace_share=args.rm_trace_share))
    family = build_family(recipe, args.out)
    paths = {k: str(v) for k, v in family.paths().items()}
    for alpha in args.alpha:
        paths[f"bai-a{alpha:g}"] = str(bai_actor(family, alpha))
    return paths, recipe, family


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `bai-toy-world`."""
    return tool_main(PROG, build_parser(), _build, argv, log_format="%(name)s: %(message)s")


if __name__ == "__main__":
    sys.exit(main())
