# Two entry points: `make report` (the main job) and `make test` (the suite).
# Both create .venv on first use and install what they need. An already-installed torch
# (e.g. a CUDA build on a GPU machine) is kept: the venv then sees the system site-packages.
# On a CPU-only machine without torch, `pip install torch==2.13.0` takes the local CPU wheel.
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
OUT    ?= out/report

.PHONY: venv report theorems test test-all lint format bench mutate mutate-group clean

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

# Mutation testing (mutmut 3, dev extra), one GROUP at a time: each group's files are mutated against
# its own FAST test subset (MUTATE_FILES_<group> / MUTATE_TESTS_<group>), in a scratch copy of the tree
# ($(MUTATE_DIR)/<group>, so the repository gets no mutants/ folder). Not part of `make test`. Prints
# each group's score and run time, then the overall score; survivors go to
# $(MUTATE_DIR)/<group>/survivors.txt (judged-equivalent ones: tests/mutation_equivalent.md).
# One group: `make mutate MUTATE_GROUPS=methods`. Run times on 2 busy cores: losses ~10-17 min,
# methods ~2 min, pipeline ~8 min, dynamics ~3 min.
MUTATE_GROUPS ?= losses methods pipeline dynamics
MUTATE_FILES_losses    = toybench/losses/_common.py toybench/losses/sft.py toybench/losses/baselines.py toybench/losses/rl.py toybench/advantages.py toybench/metrics.py
MUTATE_TESTS_losses    = tests/losses/test_oracle.py tests/losses/test_properties.py tests/losses/test_branches.py \
                         tests/losses/test_contract.py tests/losses/test_bad_inputs.py tests/losses/test_messages_and_edges.py \
                         tests/metrics/test_metrics_advantages.py
MUTATE_FILES_methods   = toybench/methods.py toybench/families.py
MUTATE_TESTS_methods   = tests/methods/test_registry.py tests/methods/test_ema.py
MUTATE_FILES_pipeline  = toybench/tabular/pipeline.py
MUTATE_TESTS_pipeline  = tests/tabular/test_pipeline.py tests/tabular/test_grpo_update.py \
                         tests/tabular/test_kl_direction.py tests/tabular/test_sequence_targets_and_shared_envs.py tests/methods/test_ema.py
MUTATE_FILES_dynamics  = toybench/tabular/dynamics.py
MUTATE_TESTS_dynamics  = tests/tabular/test_dynamics.py tests/tabular/test_kl_direction.py
MUTATE_DIR   ?= /tmp/sft-for-rl-mutate
MUTATE_JOBS  ?= 2
MUTMUT        = $(abspath $(VENV))/bin/mutmut
MUTATE_SCORE  = import json, sys; s = [json.load(open(f)) for f in sys.argv[1:]]; \
  t = {k: sum(x[k] for x in s) for k in ("killed", "total", "survived", "timeout", "no_tests")}; \
  print("mutation score: %(killed)d/%(total)d killed = %(pct).1f%%  (survived %(survived)d, timeout \
  %(timeout)d, no tests %(no_tests)d)" % dict(t, pct=100 * t["killed"] / max(t["total"], 1)))

mutate: venv
	@for g in $(MUTATE_GROUPS); do $(MAKE) --no-print-directory mutate-group GROUP=$$g || exit 1; done
	@printf 'overall (%s): ' '$(MUTATE_GROUPS)'; $(abspath $(PY)) -c '$(MUTATE_SCORE)' \
	  $(foreach g,$(MUTATE_GROUPS),$(MUTATE_DIR)/$(g)/mutants/mutmut-cicd-stats.json)

mutate-group:  # internal: run by `make mutate` (which sets up the venv) once per group
	@test -n "$(MUTATE_FILES_$(GROUP))" || { echo "unknown mutation group '$(GROUP)'"; exit 2; }
	rm -rf $(MUTATE_DIR)/$(GROUP) && mkdir -p $(MUTATE_DIR)/$(GROUP)
	git ls-files -co --exclude-standard -z | xargs -0 tar -cf - | tar -xf - -C $(MUTATE_DIR)/$(GROUP)
	cat tests/mutmut_config.toml >> $(MUTATE_DIR)/$(GROUP)/pyproject.toml
	printf 'only_mutate = [%s]\npytest_add_cli_args_test_selection = [%s]\n' \
	  '$(foreach f,$(MUTATE_FILES_$(GROUP)),"$(f)",)' '$(foreach f,$(MUTATE_TESTS_$(GROUP)),"$(f)",)' \
	  >> $(MUTATE_DIR)/$(GROUP)/pyproject.toml
	@cd $(MUTATE_DIR)/$(GROUP) && t0=$$(date +%s) && \
	  TQDM_DISABLE=1 $(MUTMUT) run --max-children $(MUTATE_JOBS) | tr '\r' '\n' | tail -n 2 && \
	  $(MUTMUT) results > survivors.txt; $(MUTMUT) export-cicd-stats > /dev/null && \
	  printf '$(GROUP) (%s s): ' "$$(( $$(date +%s) - t0 ))" && \
	  $(abspath $(PY)) -c '$(MUTATE_SCORE)' mutants/mutmut-cicd-stats.json && \
	  echo "  survivors: $(MUTATE_DIR)/$(GROUP)/survivors.txt"

clean:
	rm -rf $(VENV) out .pytest_cache .ruff_cache
