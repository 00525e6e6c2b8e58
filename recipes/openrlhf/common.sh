#!/usr/bin/env bash
# Shared helpers for the BAI OpenRLHF 0.11.2 recipes (sourced, not run).
#
# The paper (arXiv 2509.00309) trained in-house Seed-MoE models on 64 GPUs; these recipes
# are OUR adaptation to public Qwen2.5-Math / DeepSeek-R1-Distill-Qwen checkpoints on one
# node. Everything below is an env var; the defaults are starting points, not paper facts
# unless a comment says so. Multi-node (NNODES, RAY_ADDRESS=auto), async training (ASYNC=1)
# and the CPU smoke test (CPU_SMOKE=1: `bai-train --bai.cpu`, one logical GPU per role, a tiny
# actor; it checks the recipe end to end, not GPU memory or speed): see the README.
set -euo pipefail

RECIPES_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_DIR="$(cd "$RECIPES_DIR/../.." && pwd)"

: "${CPU_SMOKE:=0}"            # 1: bai-train --bai.cpu smoke test on a CPU-only machine
: "${ASYNC:=0}"                # 1: OpenRLHF async training (see the header)
: "${NNODES:=1}"
if [[ "$CPU_SMOKE" == "1" ]]; then : "${NGPUS:=1}"; fi
: "${NGPUS:=8}"                # GPUs per node
: "${VLLM_TP:=1}"              # vLLM tensor parallel size
: "${PROMPT_DATA:=zhuzilin/dapo-math-17k}"   # any prompts+labels set; math labels for the rule reward
: "${INPUT_KEY:=prompt}"
: "${LABEL_KEY:=label}"
: "${PROMPT_MAX_LEN:=1024}"
: "${MAX_NEW_TOKENS:=8192}"
: "${SAVE_ROOT:=$REPO_DIR/runs}"
: "${BAI_PYTHON:=python3}"     # the Python of the environment bai is installed in
if [[ -z "${REWARD_PY:-}" ]]; then   # rule-based math verifier, from the installed package
  REWARD_PY="$("$BAI_PYTHON" -c 'import openrlhf_patches.math_reward as m; print(m.__file__)' \
    2>/dev/null || echo "$REPO_DIR/openrlhf_patches/math_reward.py")"
fi
: "${MERGE_CONFIG:=$REPO_DIR/recipes/bai.yaml}"
: "${DRY_RUN:=0}"              # 1: print the bai-train argv (NUL separated) and exit

if [[ "$ASYNC" == "1" ]]; then TRAIN_GPUS=$(( NGPUS / 2 )); else TRAIN_GPUS=$NGPUS; fi
VLLM_ENGINES=$(( NNODES * (NGPUS - (ASYNC == 1 ? TRAIN_GPUS : 0)) / VLLM_TP ))
MAX_LEN=$(( PROMPT_MAX_LEN + MAX_NEW_TOKENS ))

# Merge the BAI actor once (SKIP_MERGE=1: ACTOR is a hub id or an existing model; stock
# mergekit-yaml sees merge_method: bai once bai is installed); then ACTOR is made absolute.
ensure_actor() {
  if [[ "${SKIP_MERGE:-0}" != "1" && ! -f "$ACTOR/config.json" ]]; then
    if [[ "$DRY_RUN" == "1" ]]; then
      echo "[dry-run] would run: mergekit-yaml $MERGE_CONFIG $ACTOR ${MERGEKIT_ARGS:-}" >&2
    else
      echo "[bai] $ACTOR not found: merging it with $MERGE_CONFIG" >&2
      # shellcheck disable=SC2086
      mergekit-yaml "$MERGE_CONFIG" "$ACTOR" ${MERGEKIT_ARGS:-}
    fi
  fi
  ACTOR="$(local_abspath "$ACTOR")"
}

# Absolute path for local model paths (Ray workers may run in another cwd); hub ids unchanged.
local_abspath() {
  case "$1" in
    ./*|../*|/*|~*) realpath -m "$1" ;;
    *) if [[ -e "$1" ]]; then realpath "$1"; else printf '%s\n' "$1"; fi ;;
  esac
}

# The placement, data and output options every recipe shares (into ARGV):
# - CPU_SMOKE=1: one process per role, nothing colocated (see the header);
# - ASYNC=1: actor + reference on TRAIN_GPUS per node, vLLM engines on the rest;
# - else every model colocated with vLLM on NGPUS per node.
# The BAI metrics land in $SAVE_ROOT/$RUN_NAME/bai_metrics.jsonl.
shared_args() {
  if [[ "$CPU_SMOKE" == "1" ]]; then
    ARGV+=(--bai.cpu
      --ref.num_nodes 1 --ref.num_gpus_per_node 1 --actor.num_nodes 1 --actor.num_gpus_per_node 1
      --vllm.num_engines 1 --vllm.tensor_parallel_size 1 --vllm.sync_backend gloo
      --vllm.enforce_eager --ds.zero_stage 0 --ds.param_dtype bf16 --ds.attn_implementation eager)
  else
    local util=0.6 sleep=(--vllm.enable_sleep --train.colocate_all --ds.enable_sleep)
    if [[ "$ASYNC" == "1" ]]; then
      ARGV+=(--train.async_enable --train.colocate_actor_ref)
      util=0.9 sleep=()
    fi
    ARGV+=(--ref.num_nodes "$NNODES" --ref.num_gpus_per_node "$TRAIN_GPUS"
      --actor.num_nodes "$NNODES" --actor.num_gpus_per_node "$TRAIN_GPUS"
      --vllm.num_engines "$VLLM_ENGINES" --vllm.tensor_parallel_size "$VLLM_TP"
      --vllm.gpu_memory_utilization "${VLLM_GPU_UTIL:-$util}" "${sleep[@]}"
      --ds.zero_stage 3 --ds.param_dtype bf16 --actor.gradient_checkpointing_enable
      --ds.packing_samples --ds.attn_implementation flash_attention_2)
  fi
  local out="$SAVE_ROOT/$RUN_NAME"
  ARGV+=(--data.prompt_dataset "$PROMPT_DATA" --data.input_key "$INPUT_KEY"
    --data.label_key "$LABEL_KEY" --data.apply_chat_template
    --data.max_len "$MAX_LEN" --rollout.max_new_tokens "$MAX_NEW_TOKENS"
    --rollout.temperature 1.0
    --ckpt.output_dir "$out" --ckpt.path "$out/ckpt"
    --ckpt.save_steps "${SAVE_STEPS:-50}" --ckpt.load_enable --ckpt.save_hf
    --logger.logging_steps 1
    --logger.tensorboard_dir "$out/tensorboard" --logger.wandb.run_name "$RUN_NAME")
  if [[ -n "${WANDB_API_KEY:-}" ]]; then
    ARGV+=(--logger.wandb.key "$WANDB_API_KEY" --logger.wandb.project "${WANDB_PROJECT:-bai}")
  fi
}

# Rollout and train batch sizes with $1 samples per prompt (into BATCH_ARGS).
batch_args() {
  BATCH_ARGS=(--rollout.batch_size "$ROLLOUT_BATCH_SIZE" --rollout.n_samples_per_prompt "$1"
    --rollout.micro_batch_size 8 --train.batch_size "$TRAIN_BATCH_SIZE"
    --train.micro_batch_size 2 --train.max_epochs 1 --train.num_episodes "${EPISODES:-1}")
}

# The reward: REWARD_MODEL (an RM with the actor's tokenizer: OpenRLHF hands it the actor's
# token ids), TEXT_RM (an RM with its own tokenizer: it scores the response text through
# openrlhf_patches/text_rm_reward.py), or the rule-based math verifier. Sets REWARD_ARGS and
# REWARD_KIND; says which in one line.
reward_args() {
  if [[ -n "${REWARD_MODEL:-}" && -n "${TEXT_RM:-}" ]]; then
    echo "[bai] set REWARD_MODEL or TEXT_RM, not both" >&2
    return 2
  fi
  if [[ -n "${REWARD_MODEL:-}" ]]; then
    REWARD_KIND="reward model $REWARD_MODEL (the actor's token ids)"
    REWARD_ARGS=(--reward.model_name_or_path "$(local_abspath "$REWARD_MODEL")"
                 --reward.num_nodes "$NNODES" --reward.num_gpus_per_node "$NGPUS"
                 --reward.normalize_enable)
  elif [[ -n "${TEXT_RM:-}" ]]; then
    REWARD_KIND="reward model $TEXT_RM on the response text (its own tokenizer)"
    export BAI_TEXT_RM BAI_TEXT_RM_ACTOR
    BAI_TEXT_RM="$(local_abspath "$TEXT_RM")"
    BAI_TEXT_RM_ACTOR="${BAI_TEXT_RM_ACTOR:-$ACTOR}"
    REWARD_ARGS=(--reward.remote_url "$(dirname "$REWARD_PY")/text_rm_reward.py")
  else
    REWARD_KIND="rule-based math reward ($REWARD_PY)"
    REWARD_ARGS=(--reward.remote_url "$REWARD_PY")
  fi
}

# Run (or, with DRY_RUN=1, print NUL-separated) bai-train with the shared options, then "$@".
run_bai_train() {
  ARGV=()
  shared_args
  ARGV+=("$@")
  if [[ "$DRY_RUN" == "1" ]]; then
    printf '%s\0' "${ARGV[@]}"
    return 0
  fi
  exec bai-train "${ARGV[@]}"
}
