#!/usr/bin/env bash
# REINFORCE++ with a per-prompt baseline (reinforce_baseline, the estimator OpenRLHF's
# maintainers recommend over GRPO for stability) on the BAI-merged 7B actor, 1 node x 8 GPUs.
# No critic. The paper ran PPO on in-house Seed models; this critic-free variant on public
# checkpoints is our adaptation. Reward: rule-based math verifier unless REWARD_MODEL or TEXT_RM
# is set (see ppo_bai_7b.sh).
# Usage: [ACTOR=./bai-actor] [NGPUS=8] recipes/openrlhf/reinforce_pp_bai_7b.sh [--extra flags]
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

: "${ACTOR:=./bai-actor}"
: "${RUN_NAME:=reinforce-pp-bai-7b}"
: "${N_SAMPLES:=8}"
: "${ROLLOUT_BATCH_SIZE:=512}"   # prompts per step (x N_SAMPLES responses)
: "${TRAIN_BATCH_SIZE:=512}"
: "${LR:=1e-6}"
ensure_actor

reward_args
echo "[bai] REINFORCE++: reward = $REWARD_KIND" >&2

batch_args "$N_SAMPLES"
run_bai_train \
  --actor.model_name_or_path "$ACTOR" \
  "${REWARD_ARGS[@]}" \
  --algo.advantage.estimator reinforce_baseline \
  --actor.adam.lr "$LR" --actor.lr_scheduler constant_with_warmup \
  "${BATCH_ARGS[@]}" \
  --algo.kl.init_coef 0.001 --algo.kl.use_loss --algo.kl.estimator k2 \
  "$@"
