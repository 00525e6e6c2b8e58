#!/usr/bin/env bash
# Control without BAI: the same PPO recipe with the actor initialized from
# DeepSeek-R1-Distill-Qwen-7B itself (the paper's "distill SFT + RLHF" row, here on public
# checkpoints instead of the paper's in-house Seed models). Compare its bai_metrics.jsonl
# with the BAI run's: length collapse and reward dips are what BAI should remove.
# Usage: [NGPUS=8] recipes/openrlhf/ppo_control_r1distill_7b.sh [--extra flags]
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export ACTOR="${ACTOR:-deepseek-ai/DeepSeek-R1-Distill-Qwen-7B}"
export RUN_NAME="${RUN_NAME:-ppo-control-r1distill-7b}"
export SKIP_MERGE=1
exec bash "$HERE/ppo_bai_7b.sh" "$@"
