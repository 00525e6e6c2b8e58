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
ensure_actor "$ACTOR" "$MERGE_CONFIG"
ACTOR="$(local_abspath "$ACTOR")"

reward_args
echo "[bai] REINFORCE++: reward = $REWARD_KIND" >&2

{ placement_args; data_args; output_args "$RUN_NAME"; } | run_bai_train \
  --actor.model_name_or_path "$ACTOR" \
  "${REWARD_ARGS[@]}" \
  --algo.advantage.estimator reinforce_baseline \
  --actor.adam.lr "$LR" --actor.lr_scheduler constant_with_warmup \
  --rollout.batch_size "$ROLLOUT_BATCH_SIZE" --rollout.n_samples_per_prompt "$N_SAMPLES" \
  --rollout.micro_batch_size 8 \
  --train.batch_size "$TRAIN_BATCH_SIZE" --train.micro_batch_size 2 \
  --train.max_epochs 1 --train.num_episodes "${EPISODES:-1}" \
  --algo.kl.init_coef 0.001 --algo.kl.use_loss --algo.kl.estimator k2 \
  "$@"
