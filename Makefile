# Two commands: `make demo` and `make test`. Both create/update .venv themselves.
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -ec
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install -q --disable-pip-version-check
STAMP := $(VENV)/.bai-installed
QUIET_PIP := { grep -v -e '^WARNING: Location' -e '^$$' || true; }

.PHONY: setup test demo paper lint bench bench-merge bench-metrics bench-hooks clean

$(STAMP): requirements/cpu-lock.txt pyproject.toml bai_autoload.py bai.pth
	test -x $(PY) || python3 -m venv $(VENV)
	@echo "[setup] torch 2.13.0 (CPU build) first, so nothing pulls a CUDA build"
	$(PIP) torch==2.13.0 2>&1 | $(QUIET_PIP)
	@echo "[setup] pinned CPU lock (--no-deps)"
	DS_BUILD_OPS=0 $(PIP) --no-deps -r requirements/cpu-lock.txt 2>&1 | $(QUIET_PIP)
	@# the deprecated `pynvml` wrapper (openrlhf requires it) prints a FutureWarning from torch in
	@# every tool; nvidia-ml-py, in the lock, provides the `pynvml` module itself
	$(PY) -m pip uninstall -y -q pynvml 2>/dev/null || true
	@echo "[setup] bai (editable; installs the import hook bai.pth: mergekit and OpenRLHF see bai)"
	$(PIP) --no-deps --no-build-isolation -e . 2>&1 | $(QUIET_PIP)
	$(PY) -c "import bai_autoload, mergekit.merge_methods as m; m.get('bai')"
	touch $(STAMP)

setup: $(STAMP)

lint: setup
	$(VENV)/bin/ruff check .

test: setup lint
	$(PY) -m pytest tests -n 2 --dist loadfile --durations=30

# make demo: the toy family (bai-toy-world, trained once and cached) merged at alpha 0.5, probed,
# trained 3 REINFORCE++ steps on its own RL prompts; DEMO_FAMILY=smollm2: SmolLM2-135M-Instruct
# and two seeded noise copies of it (real weights to merge, but the roles do not really differ)
DEMO_FAMILY ?= toy
ifeq ($(DEMO_FAMILY),smollm2)
DEMO_DATA := PROMPT_DATA=../bai_tools/data/default_prompts.jsonl LABEL_KEY=answer
DEMO_PROBE := -n 2
else
DEMO_DATA := PROMPT_DATA=prompts/train.jsonl LABEL_KEY=label
DEMO_PROBE := -n 1 --prompts demo-out/prompts/heldout.jsonl --no-samples
endif
DEMO_TRAIN_ENV := CPU_SMOKE=1 SKIP_MERGE=1 ACTOR=bai-actor RUN_NAME=bai-reinforce SAVE_ROOT=runs \
	$(DEMO_DATA) N_SAMPLES=4 \
	ROLLOUT_BATCH_SIZE=4 TRAIN_BATCH_SIZE=8 PROMPT_MAX_LEN=128 MAX_NEW_TOKENS=128 LR=1e-5 \
	PATH="$(abspath $(VENV))/bin:$$PATH" HF_HUB_OFFLINE=1 BAI_CPU_DTYPE=fp32
DEMO_TRAIN_ARGS := --algo.kl.init_coef 0 --rollout.micro_batch_size 4 --train.micro_batch_size 4 \
	--data.max_samples 12 --ckpt.save_steps 1000

demo: setup
	$(VENV)/bin/bai-demo --family $(DEMO_FAMILY)
	@echo "[demo] bai-probe: sampling the merged actor and its inputs with vLLM (CPU)"
	$(VENV)/bin/bai-probe demo-out/base demo-out/instruct demo-out/reasoning demo-out/bai-actor \
		$(DEMO_PROBE) --max-tokens 128 --dtype float32 \
		--json demo-out/probe.json --png demo-out/probe.png
	@echo "[demo] bai-train --bai.cpu: 3 REINFORCE++ steps of demo-out/bai-actor through the shipped"
	@echo "       recipes/openrlhf/reinforce_pp_bai_7b.sh (OpenRLHF's own loop, vLLM + DeepSpeed on CPU)"
	rm -rf demo-out/runs/bai-reinforce
	cd demo-out && $(DEMO_TRAIN_ENV) bash ../recipes/openrlhf/reinforce_pp_bai_7b.sh \
		$(DEMO_TRAIN_ARGS) > train.log 2>&1 || { tail -40 train.log; exit 1; }
	$(VENV)/bin/bai-report bai-actor=demo-out/runs/bai-reinforce --png demo-out/train-report.png
	@echo ""
	@echo "[demo] artefacts:"
	@echo "  merged actor (stock mergekit-yaml):  demo-out/bai-actor/ (model card: README.md)"
	@echo "  probe of the candidates:             demo-out/probe.png, demo-out/probe.json"
	@echo "  training log (OpenRLHF + bai hooks): demo-out/train.log"
	@echo "  per-step BAI metrics:                demo-out/runs/bai-reinforce/bai_metrics.jsonl"
	@echo "  TensorBoard (train/bai/...):         demo-out/runs/bai-reinforce/tensorboard/"
	@echo "  trained actor (HF format):           demo-out/runs/bai-reinforce/"
	@echo "  training report:                     demo-out/train-report.png"

# make paper: the paper's third paradigm on the toy family (docs/paper.md). Reward = the toy
# alignment reward model (trained on direct-answer pairs only), through OpenRLHF's own reward-model
# path; PPO with the critic initialized from that RM, GAE lambda 0.95, gamma 1.0 (the recipe's
# defaults); actors reasoning, instruct, BAI alpha 0.1 / 0.5 / 0.9; seeds 0,1,2 for reasoning and
# BAI 0.5, seed 0 for the others; one ablation: reasoning with the critic from the actor; the
# REINFORCE++ arm with the same reward. 64 responses a step, fp32 on every CPU (BAI_CPU_DTYPE),
# RL lr 3e-5 (a tenth of the toy SFT lr, as the paper's 1e-6 is of a 7B SFT lr), 40 steps, one
# micro-batch of 64 per step (the models are tiny: fewer calls per step, the same update).
# Then held-out accuracy by the rule-based verifier. PAPER_STEPS / PAPER_OUT / PAPER_ARMS override.
PAPER_OUT ?= paper-out
PAPER_STEPS ?= 40
PAPER_ARMS ?= ppo reinforce_pp
PAPER_ENV := --env PROMPT_MAX_LEN=64 --env MAX_NEW_TOKENS=128 --env LR=3e-5 \
	--env SAVE_STEPS=100000 --env BAI_CPU_DTYPE=fp32
PAPER_ENV_ppo := --env ROLLOUT_BATCH_SIZE=64 --env TRAIN_BATCH_SIZE=64 \
	--seeds 0 --actor-seeds reasoning=0,1,2 --actor-seeds bai-a0.5=0,1,2
PAPER_ENV_reinforce_pp := --env N_SAMPLES=4 --env ROLLOUT_BATCH_SIZE=16 --env TRAIN_BATCH_SIZE=64 \
	--seeds 0

paper: setup
	@echo "[paper] toy family, its reward model and the BAI actors (bai-toy-world; cached after a first build)"
	mkdir -p $(PAPER_OUT) && $(VENV)/bin/bai-toy-world build --alpha 0.1,0.5,0.9 --json > $(PAPER_OUT)/family.json
	@F=$$($(PY) -c 'import json,sys; print(json.load(open(sys.argv[1]))["root"])' \
		$(PAPER_OUT)/family.json); \
	for arm in $(PAPER_ARMS); do \
		echo "[paper] bai-compare $${arm}_bai_7b, $(PAPER_STEPS) steps -> $(PAPER_OUT)/$$arm"; \
		env=""; [ $$arm = ppo ] && env="$(PAPER_ENV_ppo) --actor reasoning-critic-actor=$$F/reasoning \
			--actor-env reasoning-critic-actor=CRITIC_INIT=$$F/reasoning" || env="$(PAPER_ENV_reinforce_pp)"; \
		PATH="$(abspath $(VENV))/bin:$$PATH" HF_HUB_OFFLINE=1 $(VENV)/bin/bai-compare \
			$${arm}_bai_7b --cpu --steps $(PAPER_STEPS) --out $(PAPER_OUT)/$$arm \
			--actor reasoning=$$F/reasoning --actor instruct=$$F/instruct \
			--actor bai-a0.1=$$F/actors/bai-a0.1 --actor bai-a0.5=$$F/actors/bai-a0.5 \
			--actor bai-a0.9=$$F/actors/bai-a0.9 \
			--prompts $$F/prompts/train.jsonl --heldout $$F/prompts/heldout.jsonl \
			--eval-max-tokens 128 --env REWARD_MODEL=$$F/reward $(PAPER_ENV) $$env \
			-- --rollout.micro_batch_size 64 --train.micro_batch_size 64 \
			--bai.bucket_width 10 --bai.num_buckets 13 --bai.samples 8 || status=1; \
	done; \
	echo "[paper] tables: $(PAPER_OUT)/*/comparison.md, plots: $(PAPER_OUT)/*/comparison.png"; \
	exit $${status:-0}

bench: bench-merge bench-metrics bench-hooks

bench-merge: setup
	$(PY) benchmarks/merge_speed.py

bench-metrics: setup
	$(PY) benchmarks/metrics_speed.py

bench-hooks: setup
	$(PY) benchmarks/hook_overhead.py

clean:
	rm -rf $(VENV) demo-out bench-out
