#!/usr/bin/env bash
# PPO on the BAI-merged 1.5B actor (Qwen2.5-Math-1.5B + -Instruct + DeepSeek-R1-Distill-
# Qwen-1.5B, recipes/bai-1.5b.yaml): same paper hyper-parameters as ppo_bai_7b.sh, smaller
# batch so one 8-GPU node (or fewer: NGPUS=4) turns steps around quickly. The paper used
# in-house Seed models; this is our adaptation to public checkpoints.
# Usage: [ACTOR=./bai-actor-1.5b] [NGPUS=8] recipes/openrlhf/ppo_bai_1.5b.sh [--extra flags]
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export ACTOR="${ACTOR:-./bai-actor-1.5b}"
export MERGE_CONFIG="${MERGE_CONFIG:-$HERE/../bai-1.5b.yaml}"
export RUN_NAME="${RUN_NAME:-ppo-bai-1.5b}"
export ROLLOUT_BATCH_SIZE="${ROLLOUT_BATCH_SIZE:-1024}"
export TRAIN_BATCH_SIZE="${TRAIN_BATCH_SIZE:-256}"
exec bash "$HERE/ppo_bai_7b.sh" "$@"
