#!/usr/bin/env bash
# GRPO (group_norm advantages, KL as a k3 loss) on the BAI-merged 7B actor, 1 node x 8 GPUs.
# The paper ran PPO on in-house Seed models; GRPO on public checkpoints is our adaptation,
# kept for comparison with the REINFORCE++ recipe (often the more stable of the two).
# Usage: [ACTOR=./bai-actor] [NGPUS=8] recipes/openrlhf/grpo_bai_7b.sh [--extra flags]
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

: "${ACTOR:=./bai-actor}"
: "${RUN_NAME:=grpo-bai-7b}"
: "${N_SAMPLES:=8}"
: "${ROLLOUT_BATCH_SIZE:=512}"
: "${TRAIN_BATCH_SIZE:=512}"
: "${LR:=1e-6}"
ensure_actor
batch_args "$N_SAMPLES"
run_bai_train \
  --actor.model_name_or_path "$ACTOR" \
  --reward.remote_url "$REWARD_PY" \
  --algo.advantage.estimator group_norm \
  --actor.adam.lr "$LR" --actor.lr_scheduler constant_with_warmup \
  "${BATCH_ARGS[@]}" \
  --algo.kl.init_coef 0.001 --algo.kl.use_loss --algo.kl.estimator k3 \
  "$@"
