# Two entry points: `make report` (the main job) and `make test` (the suite).
# Both create .venv on first use and install what they need. An already-installed torch
# (e.g. a CUDA build on a GPU machine) is kept: the venv then sees the system site-packages.
# On a CPU-only machine without torch, `pip install torch==2.13.0` takes the local CPU wheel.
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
OUT    ?= out/report

.PHONY: venv report theorems test test-all lint format bench mutate clean

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

# Mutation testing (mutmut 3, dev extra) of the loss-side modules against a FAST test subset.
# Not part of `make test`; about 10 minutes on 2 cores. Runs in a scratch copy (MUTATE_DIR) so the
# repository gets no mutants/ folder; prints the score and writes the survivors to
# $(MUTATE_DIR)/survivors.txt (judged-equivalent ones: tests/mutation_equivalent.md).
# TODO: add toybench/methods.py (the Method registry) and the tabular training engine, with their
# fast tests, to MUTATE_FILES / MUTATE_TESTS once the registry rewrite and the subpackage moves land.
MUTATE_FILES ?= toybench/losses.py toybench/advantages.py toybench/metrics.py
MUTATE_TESTS ?= tests/test_losses_oracle.py tests/test_losses_properties.py tests/test_losses_branches.py \
                tests/test_losses_contract.py tests/test_bad_inputs.py tests/test_losses_messages_edges.py \
                tests/test_metrics_advantages.py
MUTATE_DIR   ?= /tmp/sft-for-rl-mutate
MUTATE_JOBS  ?= 2

mutate: venv
	rm -rf $(MUTATE_DIR) && mkdir -p $(MUTATE_DIR)
	git ls-files -co --exclude-standard -z | xargs -0 tar -cf - | tar -xf - -C $(MUTATE_DIR)
	cat tests/mutmut_config.toml >> $(MUTATE_DIR)/pyproject.toml
	printf 'only_mutate = [%s]\npytest_add_cli_args_test_selection = [%s]\n' \
	  '$(foreach f,$(MUTATE_FILES),"$(f)",)' '$(foreach f,$(MUTATE_TESTS),"$(f)",)' >> $(MUTATE_DIR)/pyproject.toml
	cd $(MUTATE_DIR) && TQDM_DISABLE=1 $(abspath $(VENV))/bin/mutmut run --max-children $(MUTATE_JOBS) | tr '\r' '\n' | tail -n 2
	cd $(MUTATE_DIR) && $(abspath $(VENV))/bin/mutmut results > survivors.txt; \
	  $(abspath $(VENV))/bin/mutmut export-cicd-stats > /dev/null && \
	  $(abspath $(PY)) -c "import json; s = json.load(open('mutants/mutmut-cicd-stats.json')); \
	  print(f\"mutation score: {s['killed']}/{s['total']} killed = {100 * s['killed'] / s['total']:.1f}%  \
	  (survived {s['survived']}, timeout {s['timeout']}, no tests {s['no_tests']}); survivors: $(MUTATE_DIR)/survivors.txt\")"

clean:
	rm -rf $(VENV) out .pytest_cache .ruff_cache
