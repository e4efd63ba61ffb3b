# Two entry points: `make report` (the main job) and `make test` (the suite).
# Both create .venv on first use and install what they need. An already-installed torch
# (e.g. a CUDA build on a GPU machine) is kept: the venv then sees the system site-packages.
# On a CPU-only machine without torch, `pip install torch==2.13.0` takes the local CPU wheel.
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
OUT    ?= out/report

.PHONY: venv report theorems test test-all lint format bench clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml scripts/setup_venv.sh
	PYTHON=$(PYTHON) VENV=$(VENV) bash scripts/setup_venv.sh
	touch $@

report: venv
	$(VENV)/bin/toybench report --out $(OUT)

theorems: venv
	$(VENV)/bin/toybench theorems --out out/theorems

test: venv
	$(PY) -m pytest -q

test-all: venv
	$(PY) -m pytest -q -m "not gpu"

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: venv
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

# Every benchmark at its documented shape; all RESULT lines are repeated at the end.
# grpo_vs_trl prints RESULT ...=nan without trl; llm_gpu is skipped without CUDA.
BENCH_LOG ?= out/bench.log
bench: venv
	@mkdir -p $(dir $(BENCH_LOG)); : > $(BENCH_LOG)
	$(PY) benchmarks/report_scaling.py 2>&1 | tee -a $(BENCH_LOG)
	$(PY) benchmarks/chunked_losses.py 2>&1 | tee -a $(BENCH_LOG)
	$(PY) benchmarks/transformer_speed.py 2>&1 | tee -a $(BENCH_LOG)
	$(PY) benchmarks/grpo_vs_trl.py --prompts 8 --group 8 2>&1 | tee -a $(BENCH_LOG)
	@if $(PY) -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then \
		$(PY) benchmarks/llm_gpu.py 2>&1 | tee -a $(BENCH_LOG); \
	else echo "llm_gpu.py: skipped (no CUDA device)" | tee -a $(BENCH_LOG); fi
	@echo "== RESULT lines =="; grep '^RESULT' $(BENCH_LOG)

clean:
	rm -rf $(VENV) out .pytest_cache .ruff_cache
