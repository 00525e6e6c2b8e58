# Two commands: `make demo` and `make test`. Both create/update .venv themselves.
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -ec
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install -q --disable-pip-version-check
STAMP := $(VENV)/.bai-installed
QUIET_PIP := { grep -v -e '^WARNING: Location' -e '^$$' || true; }

.PHONY: setup test demo lint bench bench-merge bench-metrics clean

$(STAMP): requirements/cpu-lock.txt pyproject.toml bai_mergekit_autoload.py bai_mergekit.pth
	test -x $(PY) || python3 -m venv $(VENV)
	@echo "[setup] torch 2.13.0 (CPU build) first, so nothing pulls a CUDA build"
	$(PIP) torch==2.13.0 2>&1 | $(QUIET_PIP)
	@echo "[setup] pinned CPU lock (--no-deps)"
	DS_BUILD_OPS=0 $(PIP) --no-deps -r requirements/cpu-lock.txt 2>&1 | $(QUIET_PIP)
	@echo "[setup] bai (editable; installs the mergekit plugin hook bai_mergekit.pth)"
	$(PIP) --no-deps --no-build-isolation -e . 2>&1 | $(QUIET_PIP)
	$(PY) -c "import bai_mergekit_autoload, mergekit.merge_methods as m; m.get('bai')"
	touch $(STAMP)

setup: $(STAMP)

lint: setup
	$(VENV)/bin/ruff check .

test: setup lint
	$(PY) -m pytest tests

demo: setup
	$(VENV)/bin/bai-demo
	@echo "[demo] bai-probe: sampling the merged actor and its inputs with vLLM (CPU)"
	$(VENV)/bin/bai-probe demo-out/base demo-out/instruct demo-out/reasoning demo-out/bai-actor \
		-n 2 --max-tokens 96 --dtype float32 \
		--json-out demo-out/probe.json --png-out demo-out/probe.png
	@echo "[demo] probe plot: demo-out/probe.png  (JSON: demo-out/probe.json)"

bench: bench-merge bench-metrics

bench-merge: setup
	$(PY) benchmarks/merge_speed.py

bench-metrics: setup
	$(PY) benchmarks/metrics_speed.py

clean:
	rm -rf $(VENV) demo-out bench-out
