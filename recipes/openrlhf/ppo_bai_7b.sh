#!/usr/bin/env bash
# PPO (GAE) on the BAI-merged 7B actor, OpenRLHF 0.11.2 via bai-train, 1 node x 8 GPUs.
#
# Paper setup (arXiv 2509.00309): PPO with GAE lambda 0.95, gamma 1.0, critic initialized
# from the reward model, AdamW, actor/critic lr 1e-6 constant after warmup, global batch
# 4096 (each prompt sampled once), mini-batch 512. The paper used in-house Seed models on
# 64 GPUs; this is our adaptation to public checkpoints (BAI of Qwen2.5-Math-7B +
# Qwen2.5-Math-7B-Instruct + DeepSeek-R1-Distill-Qwen-7B, recipes/bai.yaml).
#
# VC-PPO (arXiv 2503.01491) blames long-CoT length collapse partly on a reward-model critic
# init plus lambda < 1, i.e. exactly this setup: CRITIC_INIT and GAE_LAMBDA are explicit so
# you can separate the causes (e.g. GAE_LAMBDA=1.0, or CRITIC_INIT=$ACTOR).
#
# Reward (see reward_args in common.sh): REWARD_MODEL, for the paper's RM + RM-initialized
# critic (its value head: add --ds.value_head_prefix if it is not "score"); TEXT_RM or the
# rule-based math verifier, with a critic from CRITIC_INIT (default: the actor).
# Usage: [ACTOR=./bai-actor] [REWARD_MODEL=...] [NGPUS=8] recipes/openrlhf/ppo_bai_7b.sh [--extra flags]
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

: "${ACTOR:=./bai-actor}"
: "${RUN_NAME:=ppo-bai-7b}"
: "${GAE_LAMBDA:=0.95}"          # paper
: "${GAE_GAMMA:=1.0}"            # paper
: "${LR:=1e-6}"                  # paper, actor and critic
: "${WARMUP_RATIO:=0.03}"        # not in the paper
: "${ROLLOUT_BATCH_SIZE:=4096}"  # paper: global batch 4096, one sample per prompt
: "${TRAIN_BATCH_SIZE:=512}"     # paper: mini-batch 512
: "${KL_COEF:=0.001}"            # not in the paper
ensure_actor

reward_args
: "${CRITIC_INIT:=${REWARD_MODEL:-$ACTOR}}"   # paper: critic from the reward model
CRITIC_INIT="$(local_abspath "$CRITIC_INIT")"
echo "[bai] PPO: reward = $REWARD_KIND; critic initialized from $CRITIC_INIT; GAE lambda" \
  "$GAE_LAMBDA, gamma $GAE_GAMMA" >&2

batch_args 1
run_bai_train \
  --actor.model_name_or_path "$ACTOR" \
  --critic.model_name_or_path "$CRITIC_INIT" \
  --critic.num_nodes "$NNODES" --critic.num_gpus_per_node "$NGPUS" \
  "${REWARD_ARGS[@]}" \
  --algo.advantage.estimator gae \
  --algo.advantage.lambd "$GAE_LAMBDA" --algo.advantage.gamma "$GAE_GAMMA" \
  --actor.adam.lr "$LR" --critic.adam.lr "$LR" \
  --actor.lr_scheduler constant_with_warmup --critic.lr_scheduler constant_with_warmup \
  --actor.lr_warmup_ratio "$WARMUP_RATIO" --critic.lr_warmup_ratio "$WARMUP_RATIO" \
  --actor.adam.weight_decay 0.0 \
  "${BATCH_ARGS[@]}" \
  --algo.kl.init_coef "$KL_COEF" --algo.kl.estimator k1 \
  --bai.baseline_steps 3 --bai.collapse_drop 0.5 \
  "$@"
