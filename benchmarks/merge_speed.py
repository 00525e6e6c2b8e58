"""Merge speed: `bai` vs mergekit two-stage, folded linear, the I/O floor, and a K-sweep.

    python benchmarks/merge_speed.py [--hidden 2048 --layers 16 --repeat 1] [--baseline-venv DIR]

Builds three random bf16 Qwen2 models (>= 1B parameters each) once under bench-out/, then
runs every contender as a fresh process, side by side in one run, on a warm page cache,
and prints a markdown table with wall time, peak RSS and ratios. `--baseline-venv` names a
venv holding an earlier bai (`git worktree add /tmp/base REV && make -C /tmp/base setup`, then
`/tmp/base/.venv`): its `bai` merge and sweep run in the same rounds, next to ours (after ours
in even rounds, before in odd ones), and every ratio is printed for both, so a change is
compared with its baseline on the same machine state.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch
import yaml
from safetensors.torch import save_file
from tqdm import tqdm

BIN = Path(sys.executable).parent
ROLES = ("base", "instruct", "reasoning")


def build_models(root: Path, hidden: int, layers: int, vocab: int) -> dict[str, Path]:
    """Random bf16 Qwen2 checkpoints sharing one config and a small tokenizer."""
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    from bai_demo.toy_models import write_tokenizer

    paths = {r: root / r for r in ROLES}
    if all((p / "model.safetensors").exists() for p in paths.values()):
        return paths
    tok = AutoTokenizer.from_pretrained(write_tokenizer(root / "_tok"))
    cfg = Qwen2Config(
        vocab_size=vocab, hidden_size=hidden, intermediate_size=hidden * 4,
        num_hidden_layers=layers, num_attention_heads=hidden // 128,
        num_key_value_heads=max(1, hidden // 512), tie_word_embeddings=False,
        torch_dtype="bfloat16", architectures=["Qwen2ForCausalLM"],
    )
    with torch.device("meta"):  # names and shapes only, no memory
        shapes = {k: tuple(v.shape) for k, v in Qwen2ForCausalLM(cfg).state_dict().items()}
    gen = torch.Generator().manual_seed(0)
    for role, path in paths.items():
        path.mkdir(parents=True, exist_ok=True)
        tensors = {
            name: (torch.randn(shape, generator=gen) * 0.02).to(torch.bfloat16)
            for name, shape in tqdm(shapes.items(), desc=f"random {role}", leave=False)
        }
        save_file(tensors, path / "model.safetensors", metadata={"format": "pt"})
        del tensors
        cfg.save_pretrained(path)
        tok.save_pretrained(path)
    return paths


def params(path: Path) -> int:
    from safetensors import safe_open

    with safe_open(path / "model.safetensors", "pt") as f:
        return sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())


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


def io_floor_cmd(m: dict[str, Path], outs: list[Path]) -> list[str]:
    """Read the 3 inputs into user space once and write len(outs) model-sized files from it.

    No math and no framework, but the same kind of I/O a merge does (buffered reads and
    writes through user space; an in-kernel copy would skip the copies a writer must make).
    """
    code = (
        "import sys\n"
        "ins, outs = sys.argv[1:4], [open(o, 'wb') for o in sys.argv[4:]]\n"
        "buf = bytearray(1 << 24)\n"
        "for i, p in enumerate(ins):\n"
        "    with open(p, 'rb', buffering=0) as f:\n"
        "        while (n := f.readinto(buf)):\n"
        "            if i == 0:\n"
        "                for o in outs: o.write(memoryview(buf)[:n])\n"
        "for o in outs: o.close()\n"
    )
    return [sys.executable, "-c", code, *(str(m[r] / "model.safetensors") for r in ROLES),
            *map(str, outs)]


def summarize(best: dict[str, tuple[float, float]], bai: float, sweep: float) -> dict:
    """The ratios of one bai build (its merge `bai` and sweep `sweep` seconds) to the others."""
    two, lin, floor, sep, floor4, startup = (best[k][0] for k in (
        "two-stage (mergekit-multi)", "folded linear (mergekit-yaml)",
        "I/O floor (read 3 + write 1)", "4 separate bai merges",
        "I/O floor (read 3 + write 4)", "mergekit-yaml start-up (--help)"))
    return {
        "two_stage_over_bai": two / bai, "bai_over_folded_linear": bai / lin,
        "bai_over_io_floor": bai / floor,
        "bai_minus_startup_over_io_floor": (bai - startup) / floor,
        "sweep4_over_one_bai": sweep / bai, "four_separate_over_sweep4": sep / sweep,
        "sweep4_over_io_floor4": sweep / floor4,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, default=Path("bench-out"))
    ap.add_argument("--hidden", type=int, default=2048)
    ap.add_argument("--layers", type=int, default=16)
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--baseline-venv", type=Path, default=None,
                    help="venv with an earlier bai: its bai and bai-sweep run beside ours")
    args = ap.parse_args()
    root = args.root
    models = build_models(root / "models", args.hidden, args.layers, args.vocab)
    n_params = params(models["base"])
    work = root / "work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    for r in ROLES:  # warm the page cache so every contender starts equal
        (models[r] / "model.safetensors").read_bytes()
    yaml_bai = write_yaml(work / "bai.yaml", [bai_doc(models, 0.5)])
    yaml_multi = write_yaml(work / "multi.yaml", [
        {"name": "sft", "merge_method": "linear", "dtype": "bfloat16",
         "models": [{"model": str(models["instruct"]), "parameters": {"weight": 0.5}},
                    {"model": str(models["reasoning"]), "parameters": {"weight": 0.5}}]},
        {"merge_method": "linear", "dtype": "bfloat16",
         "models": [{"model": str(models["base"]), "parameters": {"weight": 0.5}},
                    {"model": "sft", "parameters": {"weight": 0.5}}]},
    ])
    yaml_linear = write_yaml(work / "linear.yaml", [
        {"merge_method": "linear", "dtype": "bfloat16",
         "models": [{"model": str(models["base"]), "parameters": {"weight": 0.5}},
                    {"model": str(models["instruct"]), "parameters": {"weight": 0.25}},
                    {"model": str(models["reasoning"]), "parameters": {"weight": 0.25}}]}])
    alphas = [0.2, 0.4, 0.6, 0.8]
    separate = [write_yaml(work / f"bai{a}.yaml", [bai_doc(models, a)]) for a in alphas]
    myk = str(BIN / "mergekit-yaml")

    def bai_runs(bin_dir: Path) -> dict[str, list[list[str]]]:
        sweep = [str(bin_dir / "bai-sweep"), str(yaml_bai), str(work / "sweep"),
                 "--base-weight", ",".join(map(str, alphas)), "--quiet"]
        return {"bai": [[str(bin_dir / "mergekit-yaml"), str(yaml_bai), str(work / "o"),
                         "--quiet"]], "sweep": [sweep]}

    now = bai_runs(BIN)
    contenders = {
        "bai (mergekit-yaml)": now["bai"],
        "two-stage (mergekit-multi)": [[str(BIN / "mergekit-multi"), str(yaml_multi), "-I",
                                        str(work / "inter"), "--out-path", str(work / "o"),
                                        "--quiet", "--no-lazy"]],
        "folded linear (mergekit-yaml)": [[myk, str(yaml_linear), str(work / "o"), "--quiet"]],
        "I/O floor (read 3 + write 1)": [io_floor_cmd(models, [work / "floor0"])],
        "mergekit-yaml start-up (--help)": [[myk, "--help"]],
        "bai-sweep K=4": now["sweep"],
        "I/O floor (read 3 + write 4)": [io_floor_cmd(models, [work / f"floor{i}"
                                                                for i in range(4)])],
        "4 separate bai merges": [[myk, str(y), str(work / f"sep{i}"), "--quiet"]
                                  for i, y in enumerate(separate)],
    }
    twins: dict[str, tuple[str, list[list[str]]]] = {}
    if args.baseline_venv:  # each next to its counterpart, so the pairs run back to back
        base = bai_runs(args.baseline_venv.absolute() / "bin")
        twins = {"bai (mergekit-yaml)": ("bai, baseline venv", base["bai"]),
                 "bai-sweep K=4": ("bai-sweep K=4, baseline venv", base["sweep"])}
        contenders = dict(kv for name, cmds in contenders.items()
                          for kv in [(name, cmds), *([twins[name]] if name in twins else [])])
    results: dict[str, list[tuple[float, float]]] = {k: [] for k in contenders}
    order = list(contenders)
    swapped = list(order)  # odd rounds: each baseline twin runs before its counterpart
    for name, (twin, _) in twins.items():
        i = swapped.index(name)
        swapped[i], swapped[i + 1] = twin, name
    for rep in range(args.repeat):
        for name in order if rep % 2 == 0 else swapped:  # odd rounds: the baseline goes first
            cmds = contenders[name]
            wall, rss = 0.0, 0.0
            for cmd in cmds:
                w, r = timed(cmd)
                wall, rss = wall + w, max(rss, r)
            results[name].append((wall, rss))
            print(f"[rep {rep}] {name}: {wall:.1f}s, {rss:.2f} GiB", file=sys.stderr)
            for p in work.iterdir():  # the outputs; the recipes stay
                if p.is_dir():
                    shutil.rmtree(p)
                elif p.suffix != ".yaml":
                    p.unlink()
    best = {k: min(v) for k, v in results.items()}
    bai = best["bai (mergekit-yaml)"][0]
    ratios = {"now": summarize(best, bai, best["bai-sweep K=4"][0])}
    if args.baseline_venv:
        ratios["baseline venv"] = summarize(best, best["bai, baseline venv"][0],
                                            best["bai-sweep K=4, baseline venv"][0])
    print(f"\nModels: 3 x {n_params / 1e9:.2f}B parameters, bf16 "
          f"({(models['base'] / 'model.safetensors').stat().st_size / 1e9:.2f} GB each); "
          f"best of {args.repeat}; warm page cache\n")
    print("| contender | wall (s) | peak RSS (GiB) | wall / bai |")
    print("|---|---:|---:|---:|")
    for name, (wall, rss) in best.items():
        print(f"| {name} | {wall:.1f} | {rss:.2f} | {wall / bai:.2f} |")
    print("\nRatios (targets: two-stage/bai >= 1.5, bai/linear <= 1.05, bai/floor <= 1.3, "
          "sweep4/bai < 2):")
    print(json.dumps({who: {k: round(v, 3) for k, v in r.items()} for who, r in ratios.items()},
                     indent=2))


if __name__ == "__main__":
    main()
