"""The toy world's task: n-digit addition with a teacher program that writes carry traces."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from bai_core.constants import THINK_CLOSE, THINK_OPEN

ENDOFTEXT, IM_START, IM_END = "<|endoftext|>", "<|im_start|>", "<|im_end|>"
SPECIAL_TOKENS = (ENDOFTEXT, IM_START, IM_END, THINK_OPEN, THINK_CLOSE)
# Qwen-style chat template. The generation prompt does not open <think>: the instruct model
# answers at once and the reasoning model opens its think block itself, so the two roles (and
# any merge of them) are told apart by what they generate, not by the prompt.
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@dataclass(frozen=True)
class TaskSpec:
    """Difficulty mix: the longer operand has n digits with probability `digit_weights[n-1]`,
    the other 1..n digits (uniform); held-out pairs never appear in any training text.
    Operands are written zero-padded to `max_digits` ("0042+0917"), so a column always sits
    at the same place: a 1M-parameter model then learns to read them within minutes, while
    digit positions that move with the operand lengths were not learned in the same budget."""

    max_digits: int = 3
    digit_weights: tuple[float, ...] = (1 / 3, 1 / 3, 1 / 3)
    heldout_size: int = 200
    rl_train_size: int = 512
    seed: int = 1234
    # the teacher re-checks 0..recheck_max random columns after adding them (uniform), so its
    # traces vary in length while the answer stays the same
    recheck_max: int = 3

    def __post_init__(self) -> None:
        if len(self.digit_weights) != self.max_digits:
            raise ValueError("digit_weights needs one weight per digit count")


@dataclass(frozen=True)
class Problem:
    """One addition problem a + b."""

    a: int
    b: int
    width: int = 4

    @property
    def digits(self) -> int:
        """Digits of the longer operand: the item's difficulty."""
        return max(len(str(self.a)), len(str(self.b)))

    @property
    def answer(self) -> str:
        return str(self.a + self.b)

    @property
    def question(self) -> str:
        """The user message (and the start of a raw pretraining document)."""
        return f"{self.a:0{self.width}d}+{self.b:0{self.width}d}"


def trace_lines(problem: Problem) -> list[str]:
    """The teacher: one fixed-width line per column (all `width` of them), least significant
    first, `x+y+c=ss` with the two-digit column sum (its first digit is the next carry), as a
    pupil adds on paper."""
    xs, ys = str(problem.a)[::-1], str(problem.b)[::-1]
    carry, lines = 0, []
    for i in range(problem.width):
        x = int(xs[i]) if i < len(xs) else 0
        y = int(ys[i]) if i < len(ys) else 0
        total = x + y + carry
        lines.append(f"{x}+{y}+{carry}={total:02d}")
        carry = total // 10
    return lines


def recheck_lines(problem: Problem, count: int, rng: random.Random) -> list[str]:
    """`count` re-checks of random columns: `check x+y+c=ss`, the column's line again."""
    lines = trace_lines(problem)
    return [f"check {lines[rng.randrange(len(lines))]}" for _ in range(count)]


def direct_answer(problem: Problem) -> str:
    """What the instruct model is trained to say: the sum, nothing else."""
    return problem.answer


def reasoning_answer(problem: Problem, rechecks: int = 0, rng: random.Random | None = None
                     ) -> str:
    """What the distilled reasoning model is trained to say: think trace (the columns, then
    `rechecks` re-checked columns), then the sum."""
    lines = trace_lines(problem) + recheck_lines(problem, rechecks, rng or random.Random(0))
    return f"{THINK_OPEN}\n" + "\n".join(lines) + f"\n{THINK_CLOSE}\n" + problem.answer


class Teacher:
    """The reasoning teacher of one training stream: a trace with a random number of re-checks
    (0..recheck_max, its own seeded draw) for each problem it is asked."""

    def __init__(self, spec: TaskSpec, seed: int) -> None:
        self.recheck_max = spec.recheck_max
        self.rng = random.Random(f"teacher-{spec.seed}-{seed}")

    def __call__(self, problem: Problem) -> str:
        return reasoning_answer(problem, self.rng.randint(0, self.recheck_max), self.rng)


def wrong_answer(problem: Problem, rng: random.Random) -> str:
    """The sum with one digit changed (never a leading zero): a near miss, as a reward
    model's rejected answer."""
    digits = list(problem.answer)
    i = rng.randrange(len(digits))
    choices = [d for d in "0123456789" if d != digits[i] and not (i == 0 and d == "0"
                                                                   and len(digits) > 1)]
    digits[i] = rng.choice(choices)
    return "".join(digits)


def raw_documents(problem: Problem) -> tuple[str, str]:
    """Pretraining text about one problem, no chat format: the bare equation and a worked one."""
    worked = f"{problem.question}:\n" + "\n".join(trace_lines(problem)) + \
        f"\nso {problem.question}={problem.answer}"
    return f"{problem.question}={problem.answer}", worked


def _operand(rng: random.Random, digits: int) -> int:
    if digits == 1:
        return rng.randrange(10)
    return rng.randrange(10 ** (digits - 1), 10**digits)


def sample_problem(rng: random.Random, spec: TaskSpec) -> Problem:
    """One problem from the difficulty mix."""
    n = rng.choices(range(1, spec.max_digits + 1), weights=spec.digit_weights)[0]
    m = rng.randint(1, n)
    a, b = _operand(rng, n), _operand(rng, m)
    w = spec.max_digits
    return Problem(a, b, w) if rng.random() < 0.5 else Problem(b, a, w)


def heldout_problems(spec: TaskSpec) -> list[Problem]:
    """The held-out set: distinct problems from the mix, drawn from the task seed."""
    rng = random.Random(f"heldout-{spec.seed}")
    seen: dict[Problem, None] = {}
    while len(seen) < spec.heldout_size:
        seen.setdefault(sample_problem(rng, spec), None)
    return list(seen)


def training_stream(spec: TaskSpec, seed: int, exclude: set[Problem]) -> Iterator[Problem]:
    """An endless, seeded stream of training problems, never one of `exclude` (held out)."""
    rng = random.Random(f"train-{spec.seed}-{seed}")
    while True:
        problem = sample_problem(rng, spec)
        if problem not in exclude:
            yield problem


def rl_train_problems(spec: TaskSpec, exclude: set[Problem]) -> list[Problem]:
    """The RL prompt set (from the training distribution, disjoint from the held-out set)."""
    stream = training_stream(spec, -1, exclude)
    return [next(stream) for _ in range(spec.rl_train_size)]


def write_prompt_file(path: Path, problems: Sequence[Problem]) -> Path:
    """JSONL for bai-probe and OpenRLHF: `prompt` (the user message), `label` (the sum) and
    `digits` (difficulty)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        for p in problems:
            fh.write(json.dumps({"prompt": p.question, "label": p.answer, "digits": p.digits})
                     + "\n")
    return path


def spec_dict(spec: TaskSpec) -> dict:
    """JSON form of a spec (for the recipe hash)."""
    return asdict(spec)
