"""`bai-sweep-probe`: probe a bai-sweep's candidates and inputs; KL to the reasoning model."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from bai_core.cli import BaiError, add_verbose, tool_main
from bai_tools.generation import (
    PromptFileError,
    SamplingSettings,
    default_prompts_path,
    load_prompts,
    render_prompts,
)
from bai_tools.probe import add_sampling_options, run_probe, text_table

if TYPE_CHECKING:  # torch loads only once the sweep folder and prompts have been checked
    from bai_tools.policy_kl import PolicyKL, Sequences

LOG = logging.getLogger(__name__)
PROG = "bai-sweep-probe"
JSON_NAME, PNG_NAME = "sweep-probe.json", "sweep-probe.png"
# The paper's two answers for alpha (arXiv 2509.00309).
PAPER_CHOICES = {"best_benchmarks": [0.1], "most_stable": [0.5, 0.6]}


class SweepProbeError(BaiError):
    """A sweep folder, input model or prompt file that cannot be probed; one-line message."""


@dataclass(frozen=True)
class SweepModel:
    """A candidate (a grid point: its folder and ratios) or an input of the recipe."""

    name: str  # a candidate's folder name, an input's reference in the recipe
    model_dir: Path
    role: str = "candidate"  # inputs: "base" | "sft" | "reasoning"
    base_weight: float | None = None
    weights: tuple[float, ...] = ()


@dataclass(frozen=True)
class SweepLayout:
    """What a sweep folder holds: candidates, inputs, and which input is the reasoning model."""

    candidates: list[SweepModel]
    inputs: list[SweepModel]
    reasoning_chosen_by: str

    @property
    def reasoning(self) -> SweepModel:
        return next(i for i in self.inputs if i.role == "reasoning")


def _model_ref(value: Any) -> tuple[str | None, set[str]]:
    """(locator, aliases) of an input: a mergekit `models:` entry, a plain string, or a
    sweep.json input `{"model": yaml name, "path": resolved folder, "hub_id": ...}`."""
    if isinstance(value, str):
        return value, {value}
    if not isinstance(value, dict):
        return None, set()
    names = [n for n in (value.get(k) for k in ("path", "hub_id", "model")) if isinstance(n, str)]
    return (names[0] if names else None), set(names)


def resolve_model(ref: str, out_root: Path) -> Path:
    """A local model folder for `ref`: absolute, or relative to the cwd (as mergekit reads
    it), the sweep folder or its parent; else a Hugging Face id already in the local cache."""
    path = Path(ref).expanduser()
    tries = [path] if path.is_absolute() else [Path.cwd() / path, out_root / path,
                                               out_root.parent / path]
    for candidate in tries:
        if (candidate / "config.json").is_file():
            return candidate.resolve()
    try:
        from huggingface_hub import snapshot_download

        cached = Path(snapshot_download(ref, local_files_only=True))
        if (cached / "config.json").is_file():
            return cached
    except Exception:  # noqa: BLE001 - not an id, or not cached: reported below
        LOG.debug("%s is not a cached hub model", ref, exc_info=True)
    raise SweepProbeError(f"input model {ref!r} not found (no local folder with a config.json)")


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise SweepProbeError(f"{path}: cannot read ({exc})") from None
    if not isinstance(data, dict):
        raise SweepProbeError(f"{path}: not a mergekit config")
    return data


def choose_reasoning(
    model_refs: Sequence[str], aliases: dict[str, set[str]], dirs: dict[str, Path],
    config_source: Any, override: str | None, out_root: Path,
) -> tuple[str, str]:
    """(ref of the reasoning model, how it was chosen): the `override` (a path, or an input's
    folder or recipe name), else `config_source` naming a non-base model, else the last one."""
    def match(name: str) -> str | None:
        for ref in model_refs:
            if name in aliases[ref] or name == dirs[ref].name:
                return ref
        try:
            where = resolve_model(name, out_root)
        except SweepProbeError:
            return None
        return next((r for r in model_refs if dirs[r] == where), None)

    if override is not None:
        chosen = match(override)
        if chosen is None:
            names = ", ".join(dirs[r].name for r in model_refs)
            raise SweepProbeError(f"--reasoning {override!r} is not a non-base input ({names})")
        return chosen, "argument"
    if isinstance(config_source, str):
        chosen = match(config_source)
        if chosen is not None:
            return chosen, "parameters.config_source"
    return model_refs[-1], "last non-base model"


def read_sweep(out_root: Path, reasoning: str | None = None) -> SweepLayout:
    """Candidates from `sweep.json` (ratios from each folder's mergekit_config.yml where the
    index lacks them); the inputs and `config_source` from sweep.json's `base_model` / `models`
    / `config_source` when present, else from the first candidate's mergekit_config.yml."""
    out_root = Path(out_root)
    if not out_root.is_dir():
        raise SweepProbeError(f"sweep folder not found: {out_root}")
    index_path = out_root / "sweep.json"
    if not index_path.is_file():
        raise SweepProbeError(f"no sweep.json in {out_root} (not a bai-sweep output folder)")
    try:
        index = json.loads(index_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise SweepProbeError(f"{index_path}: invalid JSON ({exc.msg})") from None
    entries = index.get("candidates") if isinstance(index, dict) else None
    if not isinstance(entries, list) or not entries:
        raise SweepProbeError(f"{index_path}: no candidates listed")
    candidates, configs = [], []
    for entry in entries:
        folder = entry.get("path") if isinstance(entry, dict) else None
        if not isinstance(folder, str):
            raise SweepProbeError(f"{index_path}: a candidate has no folder ('path')")
        model_dir = Path(folder) if Path(folder).is_absolute() else out_root / folder
        if not (model_dir / "config.json").is_file():
            raise SweepProbeError(f"candidate folder missing or incomplete: {model_dir}")
        cfg = _read_yaml(model_dir / "mergekit_config.yml")
        alpha = entry.get("base_weight", (cfg.get("parameters") or {}).get("base_weight"))
        weights = entry.get("weights") or [(m.get("parameters") or {}).get("weight")
                                           for m in cfg.get("models") or [] if isinstance(m, dict)]
        if not weights or not all(isinstance(x, (int, float)) for x in (alpha, *weights)):
            raise SweepProbeError(f"{model_dir}: no scalar base_weight / weights for this "
                                  "candidate")
        candidates.append(SweepModel(model_dir.name, model_dir, base_weight=float(alpha),
                                     weights=tuple(float(w) for w in weights)))
        configs.append(cfg)
    cfg = next((c for c in configs if c), {})
    base_ref = _model_ref(index.get("base_model"))[0] or _model_ref(cfg.get("base_model"))[0]
    listed = index.get("models") if isinstance(index.get("models"), list) else cfg.get("models")
    refs = [_model_ref(m) for m in listed or []]
    model_refs = [r for r, _ in refs if r]
    aliases = {r: a for r, a in refs if r}
    if base_ref is None or not model_refs:
        raise SweepProbeError(f"{out_root}: cannot tell the inputs (no base_model/models in "
                              "sweep.json or in a candidate's mergekit_config.yml)")
    dirs = {ref: resolve_model(ref, out_root) for ref in [base_ref, *model_refs]}
    source = index.get("config_source")
    source = source if isinstance(source, str) else (cfg.get("parameters") or {}).get(
        "config_source")
    chosen, how = choose_reasoning(model_refs, aliases, dirs, source, reasoning, out_root)
    inputs = [SweepModel(base_ref, dirs[base_ref], "base")]
    seen = {dirs[base_ref]}
    for ref in model_refs:
        if dirs[ref] in seen and ref != chosen:
            continue
        seen.add(dirs[ref])
        inputs.append(SweepModel(ref, dirs[ref], "reasoning" if ref == chosen else "sft"))
    return SweepLayout(candidates, inputs, how)


def weight_set_label(weights: Sequence[float]) -> str:
    """`w=0.5,0.5`: the legend label of one weight set (one line per set in the plot)."""
    return "w=" + ",".join(f"{w:g}" for w in weights)


def reasoning_sequences(reasoning: dict[str, Any], prompts: Path, input_key: str) -> Sequences:
    """Prompt ids (the reasoning model's chat template) and its sampled response ids."""
    from transformers import AutoTokenizer

    from bai_tools.policy_kl import Sequences

    conversations = [p.messages for p in load_prompts(prompts, input_key=input_key)]
    tokenizer = AutoTokenizer.from_pretrained(reasoning["model_dir"])
    _, prompt_ids = render_prompts(tokenizer, conversations)
    samples = reasoning["samples"]
    return Sequences(tuple(tuple(prompt_ids[s["prompt_index"]]) for s in samples),
                     tuple(tuple(s["token_ids"]) for s in samples))


ENTRY_KEYS = ("name", "kind", "role", "model_dir", "base_weight", "weights", "weight_set",
              "num_samples", "num_prompts", "num_scored", "metrics", "kl_to_reasoning",
              "kl_from_reasoning")


def build_report(
    out_root: Path, layout: SweepLayout, probed: dict[str, Any], kls: Sequence[PolicyKL],
    prompts_source: str,
) -> dict[str, Any]:
    """The sweep-probe JSON: one entry per candidate then per input (keys ENTRY_KEYS)."""
    from bai_tools.policy_kl import DEFINITION, ESTIMATOR

    entries = []
    for model, cand, kl in zip([*layout.candidates, *layout.inputs], probed["candidates"], kls,
                               strict=True):
        is_cand = model.role == "candidate"
        ratios = (model.base_weight, list(model.weights), weight_set_label(model.weights)) if (
            is_cand) else (None, None, None)
        entries.append(dict(zip(ENTRY_KEYS, (
            cand["name"], "candidate" if is_cand else "input", None if is_cand else model.role,
            cand["model_dir"], *ratios, *(cand[k] for k in ENTRY_KEYS[7:11]),
            kl.kl_to_reasoning, kl.kl_from_reasoning), strict=True)))
    reasoning = next(e for e in entries if e["role"] == "reasoning")
    return {
        "tool": PROG,
        "sweep_dir": str(out_root),
        "settings": probed["settings"],
        "prompts": {**probed["prompts"], "source": prompts_source},
        "reasoning": {"name": reasoning["name"], "model_dir": reasoning["model_dir"],
                      "chosen_by": layout.reasoning_chosen_by},
        "kl": {"estimator": ESTIMATOR, "definition": DEFINITION,
               "num_samples": reasoning["num_samples"], "num_tokens": kls[0].num_tokens},
        "paper_choices": PAPER_CHOICES,
        "entries": entries,
    }


def probe_sweep_dir(
    out_root: Path, prompts: Path | None, n: int, max_tokens: int, seed: int, *,
    reasoning: str | None = None, input_key: str = "prompt",
    generate_kwargs: dict[str, Any] | None = None, kl_device: str | None = None,
    kl_batch_size: int = 8,
) -> Path:
    """Probe every candidate of the sweep in `out_root` and its inputs (bai-probe's sampling,
    the same `seed` for all; KL: bai_tools.policy_kl); write sweep-probe.json and
    sweep-probe.png there; return the JSON path. Raises SweepProbeError on bad inputs."""
    from bai_tools.plots import plot_sweep_probe
    from bai_tools.policy_kl import PolicyKL, kl_to_reference

    out_root = Path(out_root)
    if n < 1 or max_tokens < 1:
        raise SweepProbeError("-n and --max-tokens must be >= 1")
    layout = read_sweep(out_root, reasoning)
    prompts_path = Path(prompts) if prompts is not None else default_prompts_path()
    try:
        load_prompts(prompts_path, input_key=input_key)
    except PromptFileError as exc:
        raise SweepProbeError(str(exc)) from None
    settings = SamplingSettings(n=n, max_tokens=max_tokens, seed=seed)
    dirs = [m.model_dir for m in (*layout.candidates, *layout.inputs)]
    probed = run_probe(dirs, prompts_path, settings, input_key=input_key,
                       generate_kwargs=generate_kwargs)
    reasoning_index = len(layout.candidates) + layout.inputs.index(layout.reasoning)
    seqs = reasoning_sequences(probed["candidates"][reasoning_index], prompts_path, input_key)
    others = [d for i, d in enumerate(dirs) if i != reasoning_index]
    try:
        kls = kl_to_reference(others, layout.reasoning.model_dir, seqs, device=kl_device,
                              batch_size=kl_batch_size)
    except ValueError as exc:  # e.g. a vocabulary that differs from the reasoning model's
        raise SweepProbeError(str(exc)) from None
    kls.insert(reasoning_index, PolicyKL(0.0, 0.0, seqs.num_tokens))  # R against itself
    report = build_report(out_root, layout, probed, kls,
                          "bundled math prompts" if prompts is None else str(prompts_path))
    json_path = out_root / JSON_NAME
    json_path.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    plot_sweep_probe(report, out_root / PNG_NAME)
    LOG.info("wrote %s and %s", json_path, out_root / PNG_NAME)
    return json_path


SWEEP_COLUMNS = [
    ("alpha", "base_weight", "{:g}"), ("weights", "weight_set", "{}"),
    ("len mean", "bai/response_length/mean", "{:.1f}"),
    ("clip", "bai/response_length/clip_ratio", "{:.2f}"),
    ("think closed", "bai/think/closed_ratio", "{:.2f}"), ("reward", "bai/reward/mean", "{:.3f}"),
    ("KL(C||R)", "kl_to_reasoning", "{:.4f}"), ("KL(R||C)", "kl_from_reasoning", "{:.4f}"),
]


def format_sweep_table(report: dict[str, Any]) -> str:
    """One row per entry: ratios, the main probe metrics and both KL directions."""
    entries = report["entries"]
    names = [e["name"] if e["kind"] == "candidate" else f"[{e['role']}] {e['name']}"
             for e in entries]
    return text_table("model", entries, names, SWEEP_COLUMNS)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG, description="Probe every candidate of a bai-sweep OUT_ROOT and its inputs "
        "(KL to the reasoning model included); write sweep-probe.json and sweep-probe.png there.")
    p.add_argument("out_root", type=Path, metavar="OUT_ROOT")
    add_sampling_options(p, "n")
    p.add_argument("--input-key", default="prompt", help="prompt field name (default: prompt)")
    p.add_argument("--reasoning", default=None,
                   help="the reasoning input (folder name or path); default: the recipe's "
                   "config_source, else the last non-base model")
    p.add_argument("--dtype", default="auto", help="vLLM dtype (auto: the model's)")
    add_verbose(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `bai-sweep-probe`: one `bai-sweep-probe: error:` line per failure."""
    return tool_main(PROG, build_parser(), _run, argv, vllm=True)


def _run(args: argparse.Namespace) -> int:
    path = probe_sweep_dir(args.out_root, args.prompts, args.n, args.max_tokens, args.seed,
                           reasoning=args.reasoning, input_key=args.input_key,
                           generate_kwargs={"dtype": args.dtype})
    print(format_sweep_table(json.loads(path.read_text(encoding="utf-8"))), flush=True)
    print(f"wrote {path} and {path.with_name(PNG_NAME)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
