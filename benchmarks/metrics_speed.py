"""Cost of the BAI metrics vs OpenRLHF's own per-step rollout stats on 8192 long responses (CPU).

Run: python benchmarks/metrics_speed.py [--responses 8192] [--max-len 16384] [--repeats 5]
     [--threads 1]
Needs openrlhf importable; without flash-attn (CPU) it uses openrlhf_patches/cpu_shims.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import sys
import tempfile
import timeit

import torch

THINK_ID = 151649  # </think> in the DeepSeek-R1-Distill-Qwen vocabulary


def build_experiences(n: int, max_len: int, micro: int, prompt: int, seed: int = 0):
    """OpenRLHF-shaped micro-batches: right-padded (micro, prompt + max response) rows."""
    from openrlhf.trainer.ppo_utils.experience import Experience

    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, max_len + 1, (n,), generator=g)
    think_at = (lengths.float() * torch.rand(n, generator=g)).long()
    closed = torch.rand(n, generator=g) < 0.8
    rewards = torch.rand(n, generator=g)
    exps = []
    for s in range(0, n, micro):
        lens = lengths[s : s + micro]
        width = prompt + int(lens.max())
        seq = torch.randint(0, 150000, (lens.numel(), width), generator=g)
        cols = torch.arange(width - 1)
        mask = (cols >= prompt - 1) & (cols < (prompt - 1 + lens).unsqueeze(1))
        rows = torch.arange(lens.numel())
        c = closed[s : s + micro]
        seq[rows[c], prompt + think_at[s : s + micro][c]] = THINK_ID
        exps.append(Experience(sequences=seq, action_mask=mask, response_length=lens.clone(),
                               truncated=lens == max_len,
                               info={"reward": rewards[s : s + micro].clone(),
                                     "kl": rewards[s : s + micro] * 0.01}))
    return exps, lengths, think_at, closed, rewards


def timed(fn, repeats: int) -> float:
    fn()  # warm-up
    return statistics.median(timeit.repeat(fn, number=1, repeat=repeats)) * 1000.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--responses", type=int, default=8192)
    ap.add_argument("--max-len", type=int, default=16384)
    ap.add_argument("--micro", type=int, default=8, help="rollout micro-batch size")
    ap.add_argument("--prompt", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads; 1 as in the Ray actor that runs the trainer (Ray sets "
                    "OMP_NUM_THREADS=1 there); 0 = torch default")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)

    repo = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
    sys.path.insert(0, repo)
    if importlib.util.find_spec("flash_attn") is None:  # CPU machine: test-only shim
        sys.path.insert(0, os.path.join(repo, "openrlhf_patches", "cpu_shims"))
    from openrlhf.trainer.ppo_trainer import BasePPOTrainer

    from bai_core.config import BaiConfig
    from bai_core.detectors import LengthCollapseDetector, RewardHockeyStickDetector
    from bai_core.metrics import compute_response_metrics, think_end_positions
    from bai_core.monitor import BaiMonitor
    from openrlhf_patches.experiences import batch_from_experiences

    original = BasePPOTrainer.__dict__["_compute_rollout_stats"]
    original = getattr(original, "__wrapped__", original)  # OpenRLHF's own, even if patched
    exps, lengths, think_at, closed, rewards = build_experiences(
        a.responses, a.max_len, a.micro, a.prompt)
    tokens = int(sum(int(e.action_mask.sum()) for e in exps))
    padded = sum(e.sequences.numel() for e in exps)
    truncated = lengths == a.max_len
    think_end = torch.where(closed, think_at, torch.full_like(think_at, -1))
    trainer = object.__new__(BasePPOTrainer)

    # correctness of the scan on this data before timing it
    got = batch_from_experiences(exps, [THINK_ID]).think_end
    assert torch.equal(got, think_end), "think_end_positions disagrees with the planted tokens"

    def bai_per_response():
        compute_response_metrics(lengths, truncated=truncated, think_end=think_end,
                                 rewards=rewards)
        length_det, reward_det = LengthCollapseDetector(), RewardHockeyStickDetector()
        for step in range(1, 5):
            length_det.update(step, float(lengths.float().mean()))
            reward_det.update(step, float(rewards.mean()))

    with tempfile.TemporaryDirectory() as tmp:
        monitor = BaiMonitor(BaiConfig(), jsonl_path=os.path.join(tmp, "m.jsonl"))
        rows = [
            ("OpenRLHF `_compute_rollout_stats` (its own per-step stats)",
             timed(lambda: original(trainer, exps), a.repeats)),
            ("BAI metrics + detectors on per-response tensors",
             timed(bai_per_response, a.repeats)),
            ("BAI `</think>` scan over the experiences' tokens",
             timed(lambda: [think_end_positions(e.sequences[:, -e.action_mask.size(1):],
                                                e.action_mask, [THINK_ID]) for e in exps],
                   a.repeats)),
            ("BAI hook total (extract + scan + metrics + detectors + JSONL row)",
             timed(lambda: monitor.compute(batch_from_experiences(exps, [THINK_ID]), None),
                   a.repeats)),
        ]
    base = rows[0][1]
    print(f"\n{a.responses} responses, lengths U[1, {a.max_len}] (mean "
          f"{lengths.float().mean():.0f}), {tokens / 1e6:.1f} M response tokens, "
          f"{padded / 1e6:.1f} M token slots in {len(exps)} micro-batches of {a.micro}; "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, median of "
          f"{a.repeats}\n")
    print("| step-stats component | median ms | x OpenRLHF's own stats |")
    print("|---|---:|---:|")
    for name, ms in rows:
        print(f"| {name} | {ms:.1f} | {ms / base:.2f} |")


if __name__ == "__main__":
    main()
