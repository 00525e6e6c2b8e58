"""Merge speed: `bai` against its I/O floor, mergekit's folded `linear`, the two-stage merge
and K separate merges, and a K-candidate `bai-sweep` against its own floor.

    python benchmarks/merge_speed.py [--scale 1b|3b] [--rounds 3] [--baseline-venv DIR]

Builds three random bf16 Qwen2 checkpoints once under ROOT/models-SCALE (`1b`: hidden 2048, 16
layers, vocab 32000, 2.2 GB each, one file; `3b`: the Qwen2.5-3B shape with an untied head,
hidden 2048, MLP 11008, 36 layers, vocab 151,936, 6.8 GB each in 2 GB shards, about 41 GB of
disk with a K=3 sweep's output). Then, round after round, every contender runs as a fresh
process, each right after `cat` has read the three inputs (so each starts on the same page
cache), and its output is deleted after. Floors, timed in the same rounds: `cat` of the three
inputs to /dev/null (read 3) and `dd` of model-sized zeros with fsync (write 1, write K).
`--baseline-venv` names a venv holding an earlier bai (`git worktree add /tmp/base REV && make
-C /tmp/base setup`, then `/tmp/base/.venv`): its merge and sweep run beside ours in the same
rounds (after ours in even rounds, before in odd ones). Prints the median wall time and peak
RSS of each contender and the ratios, for ours and the baseline's. A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml
from safetensors.torch import save_file
from tqdm import tqdm

BIN = Path(sys.executable).parent
ROLES = ("base", "instruct", "reasoning")


@dataclass(frozen=True)
class Scale:
    """Shape of the synthetic checkpoints, their shard size and the sweep's alphas."""

    hidden: int
    intermediate: int
    layers: int
    vocab: int
    shard_bytes: int
    alphas: tuple[float, ...]


SCALES = {
    "1b": Scale(2048, 8192, 16, 32000, 10**12, (0.2, 0.4, 0.6, 0.8)),
    "3b": Scale(2048, 11008, 36, 151936, 2 * 10**9, (0.1, 0.5, 0.9)),
}


def build_models(root: Path, scale: Scale) -> dict[str, Path]:
    """Random bf16 Qwen2 checkpoints sharing one config and a small tokenizer (written once)."""
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    from bai_demo.toy_models import write_tokenizer

    paths = {r: root / r for r in ROLES}
    if all((p / "config.json").exists() for p in paths.values()):
        return paths
    tok = AutoTokenizer.from_pretrained(write_tokenizer(root / "_tok"))
    cfg = Qwen2Config(
        vocab_size=scale.vocab, hidden_size=scale.hidden, intermediate_size=scale.intermediate,
        num_hidden_layers=scale.layers, num_attention_heads=scale.hidden // 128,
        num_key_value_heads=max(1, scale.hidden // 1024), tie_word_embeddings=False,
        torch_dtype="bfloat16", architectures=["Qwen2ForCausalLM"])
    with torch.device("meta"):  # names and shapes only, no memory
        shapes = {k: tuple(v.shape) for k, v in Qwen2ForCausalLM(cfg).state_dict().items()}
    shards: list[list[str]] = [[]]
    size = 0
    for name, shape in shapes.items():
        nbytes = 2 * math.prod(shape)
        if shards[-1] and size + nbytes > scale.shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(name)
        size += nbytes
    gen = torch.Generator().manual_seed(0)
    for role, path in paths.items():
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True)
        files = (["model.safetensors"] if len(shards) == 1 else
                 [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
                  for i in range(len(shards))])
        for names, file in tqdm(list(zip(shards, files)), desc=f"random {role}", leave=False):
            tensors = {n: (torch.randn(shapes[n], generator=gen) * 0.02).to(torch.bfloat16)
                       for n in names}
            save_file(tensors, path / file, metadata={"format": "pt"})
            del tensors
        if len(files) > 1:
            index = {"metadata": {"total_size": sum(2 * math.prod(s) for s in shapes.values())},
                     "weight_map": {n: f for names, f in zip(shards, files) for n in names}}
            (path / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
        cfg.save_pretrained(path)  # last: a complete folder has config.json
        tok.save_pretrained(path)
    return paths


def weight_files(path: Path) -> list[Path]:
    return sorted(path.glob("*.safetensors"))


def model_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in weight_files(path))


def timed(cmd: list[str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (GiB) of one command, via GNU time."""
    start = time.perf_counter()
    proc = subprocess.run(["/usr/bin/time", "-f", "%M", *cmd], capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode:
        raise SystemExit(f"benchmark command failed: {' '.join(cmd)}\n{proc.stderr[-3000:]}")
    rss_kb = int(proc.stderr.strip().splitlines()[-1])
    return wall, rss_kb / 1024**2


def write_yaml(path: Path, docs: list[dict]) -> Path:
    path.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    return path


def bai_doc(m: dict[str, Path], alpha: float) -> dict:
    return {"merge_method": "bai", "base_model": str(m["base"]),
            "models": [{"model": str(m["instruct"]), "parameters": {"weight": 0.5}},
                       {"model": str(m["reasoning"]), "parameters": {"weight": 0.5}}],
            "parameters": {"base_weight": alpha}, "dtype": "bfloat16"}


def read_cmd(models: dict[str, Path]) -> list[str]:
    """`cat` of every input weight file to /dev/null: the read floor, and the warm-up."""
    files = " ".join(f"'{p}'" for r in ROLES for p in weight_files(models[r]))
    return ["bash", "-c", f"cat {files} > /dev/null"]


def write_cmd(work: Path, nbytes: int, copies: int) -> list[str]:
    """`dd` of `copies` model-sized files of zeros, each with fsync: the write floor."""
    count = math.ceil(nbytes / 2**24)
    parts = [f"dd if=/dev/zero of='{work}/zeros{i}' bs=16M count={count} conv=fsync status=none"
             for i in range(copies)]
    return ["bash", "-c", " && ".join(parts)]


def ratios(median: dict[str, float], merge: str, sweep: str, k: int) -> dict[str, float]:
    """The ratios of one bai build (its merge and sweep contenders) to the others."""
    floor1 = median["read 3 (cat)"] + median["write 1 (dd, fsync)"]
    floork = median["read 3 (cat)"] + median[f"write {k} (dd, fsync)"]
    return {
        "bai / its floor (read 3 + write 1)": median[merge] / floor1,
        f"sweep K={k} / its floor (read 3 + write {k})": median[sweep] / floork,
        "folded linear / bai": median["folded linear (mergekit-yaml)"] / median[merge],
        "two-stage / bai": median["two-stage (mergekit-multi)"] / median[merge],
        f"{k} separate bai / sweep": median[f"{k} separate bai merges"] / median[sweep],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, default=Path("bench-out"))
    ap.add_argument("--scale", choices=sorted(SCALES), default="1b")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--only", nargs="*", default=None, metavar="NAME",
                    help="run only the contenders whose names start with these words")
    ap.add_argument("--baseline-venv", type=Path, default=None,
                    help="venv with an earlier bai: its merge and bai-sweep run beside ours")
    args = ap.parse_args()
    scale = SCALES[args.scale]
    models = build_models(args.root / f"models-{args.scale}", scale)
    nbytes = model_bytes(models["base"])
    k = len(scale.alphas)
    work = args.root / "work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    yaml_bai = write_yaml(work / "bai.yaml", [bai_doc(models, 0.5)])
    yaml_multi = write_yaml(work / "multi.yaml", [
        {"name": "sft", "merge_method": "linear", "dtype": "bfloat16",
         "models": [{"model": str(models["instruct"]), "parameters": {"weight": 0.5}},
                    {"model": str(models["reasoning"]), "parameters": {"weight": 0.5}}]},
        {"merge_method": "linear", "dtype": "bfloat16",
         "models": [{"model": str(models["base"]), "parameters": {"weight": 0.5}},
                    {"model": "sft", "parameters": {"weight": 0.5}}]}])
    yaml_linear = write_yaml(work / "linear.yaml", [
        {"merge_method": "linear", "dtype": "bfloat16",
         "models": [{"model": str(models["base"]), "parameters": {"weight": 0.5}},
                    {"model": str(models["instruct"]), "parameters": {"weight": 0.25}},
                    {"model": str(models["reasoning"]), "parameters": {"weight": 0.25}}]}])
    separate = [write_yaml(work / f"bai{a}.yaml", [bai_doc(models, a)]) for a in scale.alphas]
    myk = str(BIN / "mergekit-yaml")

    def bai_runs(bin_dir: Path) -> tuple[list[list[str]], list[list[str]]]:
        return ([[str(bin_dir / "mergekit-yaml"), str(yaml_bai), str(work / "o"), "--quiet"]],
                [[str(bin_dir / "bai-sweep"), str(yaml_bai), str(work / "sweep"),
                  "--base-weight", ",".join(map(str, scale.alphas)), "--quiet"]])

    merge, sweep = bai_runs(BIN)
    contenders = {
        "read 3 (cat)": [read_cmd(models)],
        "write 1 (dd, fsync)": [write_cmd(work, nbytes, 1)],
        f"write {k} (dd, fsync)": [write_cmd(work, nbytes, k)],
        "mergekit-yaml start-up (--help)": [[myk, "--help"]],
        "bai (mergekit-yaml)": merge,
        f"bai-sweep K={k}": sweep,
        "folded linear (mergekit-yaml)": [[myk, str(yaml_linear), str(work / "o"), "--quiet"]],
        "two-stage (mergekit-multi)": [[str(BIN / "mergekit-multi"), str(yaml_multi), "-I",
                                        str(work / "inter"), "--out-path", str(work / "o"),
                                        "--quiet", "--no-lazy"]],
        f"{k} separate bai merges": [[myk, str(y), str(work / f"sep{i}"), "--quiet"]
                                     for i, y in enumerate(separate)],
    }
    twins: dict[str, str] = {}
    if args.baseline_venv:  # each next to its counterpart, so the pairs run back to back
        base_merge, base_sweep = bai_runs(args.baseline_venv.absolute() / "bin")
        twins = {"bai (mergekit-yaml)": "bai, baseline venv",
                 f"bai-sweep K={k}": f"bai-sweep K={k}, baseline venv"}
        extra = {twins["bai (mergekit-yaml)"]: base_merge, twins[f"bai-sweep K={k}"]: base_sweep}
        contenders = dict(kv for name, cmds in contenders.items() for kv in [
            (name, cmds), *([(twins[name], extra[twins[name]])] if name in twins else [])])
    if args.only:
        contenders = {n: c for n, c in contenders.items()
                      if any(n.startswith(w) for w in args.only)}
    results: dict[str, list[tuple[float, float]]] = {n: [] for n in contenders}
    swapped = list(contenders)  # odd rounds: each baseline twin runs before its counterpart
    for name, twin in twins.items():
        if name in swapped and twin in swapped:
            i = swapped.index(name)
            swapped[i], swapped[i + 1] = twin, name
    if args.rounds < 1:
        return  # --rounds 0: only build the models
    warm = read_cmd(models)
    print(f"3 inputs of {nbytes / 1e9:.2f} GB each ({args.scale}); {args.rounds} rounds",
          file=sys.stderr)
    for rnd in range(args.rounds):
        for name in list(contenders) if rnd % 2 == 0 else swapped:
            wall, rss = 0.0, 0.0
            for cmd in contenders[name]:
                subprocess.run(warm, check=True)  # every contender starts on the same cache
                w, r = timed(cmd)
                wall, rss = wall + w, max(rss, r)
                for p in work.iterdir():  # the outputs go; the recipes stay
                    if p.is_dir():
                        shutil.rmtree(p)
                    elif p.suffix != ".yaml":
                        p.unlink()
            results[name].append((wall, rss))
            print(f"[round {rnd}] {name}: {wall:.1f} s, {rss:.2f} GiB", file=sys.stderr)
    median = {n: statistics.median(w for w, _ in v) for n, v in results.items()}
    print(f"\nModels: 3 x {nbytes / 1e9:.2f} GB bf16 ({args.scale}); median of {args.rounds} "
          "rounds; each contender right after `cat` of the inputs\n")
    print("| contender | median wall (s) | min-max (s) | peak RSS (GiB) |")
    print("|---|---:|---:|---:|")
    for name, rows in results.items():
        walls = [w for w, _ in rows]
        print(f"| {name} | {median[name]:.1f} | {min(walls):.1f}-{max(walls):.1f} | "
              f"{max(r for _, r in rows):.2f} |")
    needed = {"read 3 (cat)", "write 1 (dd, fsync)", f"write {k} (dd, fsync)",
              "folded linear (mergekit-yaml)", "two-stage (mergekit-multi)",
              f"{k} separate bai merges", "bai (mergekit-yaml)", f"bai-sweep K={k}"}
    if not needed <= set(median):
        return
    out = {"now": ratios(median, "bai (mergekit-yaml)", f"bai-sweep K={k}", k)}
    if twins:
        out["baseline venv"] = ratios(median, *twins.values(), k)
    print("\nRatios of the medians:")
    print(json.dumps({who: {n: round(v, 2) for n, v in r.items()} for who, r in out.items()},
                     indent=2))


if __name__ == "__main__":
    main()
