#!/usr/bin/env python
"""GRPO with TRL 1.16 on a merged BAI actor, with the bai metrics and collapse detectors.

    python recipes/trl/grpo_bai.py --model ./bai-actor --output-dir runs/trl-grpo \\
        [--data bai_tools/data/default_prompts.jsonl] [--max-steps 500] [--bai.stop_on_collapse]
    accelerate launch --num_processes 8 recipes/trl/grpo_bai.py ...      # several GPUs

The data is JSONL with a prompt and a reference answer per line (`--input-key`, `--label-key`);
the reward is the rule-based math score of `bai_core.scoring` (the answer after `</think>`; an
unclosed think block scores 0). Exit status: 0 done, 3 stopped early by the Sequence Length
Collapse detector (`--bai.stop_on_collapse`, as `bai-train`), 2 a bad option, 1 a failure.
The three lines that add bai to a GRPO script are marked `# bai`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bai_core.cli import UsageError, add_verbose, quiet_dependency_warnings, run_main
from bai_core.config import BaiConfig
from bai_core.constants import THINK_OPEN
from bai_core.scoring import score_response

PROG = "grpo_bai.py"
EXIT_EARLY_STOP = 3  # as bai-train
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "bai_tools" / "data" / "default_prompts.jsonl"
LOG = logging.getLogger("bai")


def build_parser() -> argparse.ArgumentParser:
    """The recipe's options; `--bai.<field>` for every BaiConfig field (as bai-train)."""
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="merged BAI actor (mergekit-yaml output)")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="prompt/answer JSONL")
    p.add_argument("--input-key", default="prompt")
    p.add_argument("--label-key", default="answer")
    p.add_argument("--output-dir", required=True, type=Path)
    p.add_argument("--max-steps", type=int, default=500)
    p.add_argument("--num-generations", type=int, default=8, help="completions per prompt")
    p.add_argument("--per-device-batch-size", type=int, default=8)
    p.add_argument("--gradient-accumulation-steps", type=int, default=1)
    p.add_argument("--max-completion-length", type=int, default=4096)
    p.add_argument("--learning-rate", type=float, default=1e-6)
    p.add_argument("--beta", type=float, default=0.0, help="KL coefficient (TRL's default 0)")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--save-steps", type=int, default=50)
    p.add_argument("--report-to", default="tensorboard", help="TRL/transformers reporters")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--use-vllm", action="store_true", help="TRL's vLLM generation (colocate)")
    p.add_argument("--cpu", action="store_true", help="CPU smoke run: use_cpu, fp32")
    p.add_argument("--resume", nargs="?", const="last", default=None,
                   help="resume from the last checkpoint in --output-dir, or from PATH")
    group = p.add_argument_group("bai (as bai-train's --bai.* options)")
    for f in dataclasses.fields(BaiConfig):
        default = f.default
        if isinstance(default, bool):
            group.add_argument(f"--bai.{f.name}", dest=f"bai_{f.name}", action="store_true",
                               default=default)
        else:
            group.add_argument(f"--bai.{f.name}", dest=f"bai_{f.name}", type=type(default),
                               default=default, metavar=type(default).__name__.upper())
    add_verbose(p)
    return p


def load_prompts(path: Path, input_key: str, label_key: str, chat: bool) -> list[dict[str, Any]]:
    """Rows {"prompt", "answer"}; the prompt as one user message when the model has a chat
    template (TRL then applies it with the generation prompt)."""
    rows = []
    with open(path, encoding="utf-8") as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                prompt, answer = record[input_key], record[label_key]
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise ValueError(f"{path}:{number}: need a JSON object with {input_key!r} and "
                                 f"{label_key!r} ({exc})") from None
            text = str(prompt)
            rows.append({"prompt": [{"role": "user", "content": text}] if chat else text,
                         "answer": str(answer)})
    if not rows:
        raise ValueError(f"{path}: no prompts")
    return rows


def prompt_opens_think(tokenizer: Any) -> bool:
    """Whether the chat template's generation prompt opens the think block itself (as
    R1-Distill's does): then a completion without `</think>` scores 0."""
    try:
        text = tokenizer.apply_chat_template([{"role": "user", "content": "1+1?"}],
                                             tokenize=False, add_generation_prompt=True)
    except Exception:
        return False
    return str(text).rstrip().endswith(THINK_OPEN)


def make_math_reward(tokenizer: Any, think_open: bool) -> Callable[..., list[float]]:
    """TRL reward function: `bai_core.scoring.score_response` of each completion. It decodes
    the ids itself, keeping `</think>` (TRL's `completions` drop special tokens)."""
    drop = [t for t in {tokenizer.eos_token, tokenizer.pad_token} if t]

    def math_reward(prompts, completions, completion_ids, answer, **kwargs) -> list[float]:
        texts = tokenizer.batch_decode(completion_ids, skip_special_tokens=False)
        out = []
        for text, ref in zip(texts, answer, strict=True):
            for token in drop:
                text = text.replace(token, "")
            out.append(score_response(text, ref, think_open))
        return out

    return math_reward


def train(ns: argparse.Namespace) -> int:
    from datasets import Dataset
    from transformers import AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    from bai_trl import BaiCallback  # bai (1/3)

    values = {f.name: getattr(ns, f"bai_{f.name}") for f in dataclasses.fields(BaiConfig)}
    try:
        bai = BaiCallback(BaiConfig(**values))  # bai (2/3)
    except ValueError as exc:
        raise UsageError(exc) from None
    tokenizer = AutoTokenizer.from_pretrained(ns.model)
    chat = bool(getattr(tokenizer, "chat_template", None))
    dataset = Dataset.from_list(load_prompts(ns.data, ns.input_key, ns.label_key, chat))
    reward = make_math_reward(tokenizer, chat and prompt_opens_think(tokenizer))
    args = GRPOConfig(
        output_dir=str(ns.output_dir), max_steps=ns.max_steps, seed=ns.seed,
        per_device_train_batch_size=ns.per_device_batch_size,
        gradient_accumulation_steps=ns.gradient_accumulation_steps,
        num_generations=ns.num_generations, max_completion_length=ns.max_completion_length,
        learning_rate=ns.learning_rate, beta=ns.beta, temperature=ns.temperature,
        logging_steps=1, save_steps=ns.save_steps, report_to=ns.report_to.split(","),
        use_vllm=ns.use_vllm, use_cpu=ns.cpu, bf16=not ns.cpu, disable_tqdm=True,
    )
    trainer = GRPOTrainer(model=ns.model, reward_funcs=bai.wrap([reward], score=reward),
                          args=args, train_dataset=dataset, processing_class=tokenizer,
                          callbacks=[bai])  # bai (3/3)
    resume = None if ns.resume is None else (True if ns.resume == "last" else ns.resume)
    trainer.train(resume_from_checkpoint=resume)
    trainer.save_model(str(ns.output_dir))
    if bai.stop_record and trainer.is_world_process_zero():
        print(f"{PROG}: early stop: {bai.stop_record['evidence']}; model saved to "
              f"{bai.stop_record['actor_dir'] or ns.output_dir}", file=sys.stderr)
    return EXIT_EARLY_STOP if bai.stop_record else 0


def main(argv: Sequence[str] | None = None) -> int:
    quiet_dependency_warnings()
    ns = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if ns.verbose else logging.WARNING,
                        format="%(name)s %(levelname)s %(message)s")
    LOG.setLevel(logging.INFO)
    return run_main(PROG, lambda: train(ns), ns.verbose)


if __name__ == "__main__":
    sys.exit(main())
