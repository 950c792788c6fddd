# `make run` and `make test` create .venv on first use and reinstall only when pyproject.toml changes.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.ptmt-installed

.PHONY: run test test-vm install clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# CPU-only torch first, pinned, so stable-baselines3 never resolves to a CUDA build.
	$(BIN)/pip install --disable-pip-version-check -q torch==2.13.0
	# every other library at the version in constraints.txt, so results reproduce (docs/results.md)
	$(BIN)/pip install --disable-pip-version-check -q -c constraints.txt -e '.[test]'
	touch $(STAMP)

# The demo keeps its journal, simulated machine and database under .ptmt-run/ (delete it to start over).
DEMO   := .ptmt-run
DEMOENV := PTMT_STATE_DIR=$(CURDIR)/$(DEMO)/state

run: $(STAMP)
	$(DEMOENV) $(BIN)/ptmt status --platform sim
	$(DEMOENV) $(BIN)/ptmt knobs --backend tpp --platform sim
	# gups on the simulated DRAM+CXL machine: kernel defaults, then a calmer promotion policy
	$(DEMOENV) $(BIN)/ptmt sim run --backend autonuma --workload gups --duration 120 --interval 20
	$(DEMOENV) $(BIN)/ptmt sim run --backend autonuma --workload gups --duration 120 --interval 20 \
		--set numa_balancing_promote_rate_limit_MBps=256 --set hot_threshold_ms=1
	# offline profiling: a Sobol sweep into a local SQLite database, then the knob sensitivity ranking
	$(DEMOENV) $(BIN)/ptmt profile --platform sim --backend autonuma --workload gups --budget 32 --workers 2 --duration 180 --interval 10 \
		--db sqlite:///$(CURDIR)/$(DEMO)/ptmt.db --no-progress
	$(DEMOENV) $(BIN)/ptmt analyze --backend autonuma --db sqlite:///$(CURDIR)/$(DEMO)/ptmt.db
	# online tuning of gups, starting from the query model fitted on that sweep, against the same-seed defaults
	$(DEMOENV) $(BIN)/ptmt model fit --backend autonuma --db sqlite:///$(CURDIR)/$(DEMO)/ptmt.db \
		--output $(CURDIR)/$(DEMO)/autonuma-model.npz
	$(DEMOENV) $(BIN)/ptmt tune --platform sim --backend autonuma --workload gups --duration 900 \
		--query-model $(CURDIR)/$(DEMO)/autonuma-model.npz --db sqlite:///$(CURDIR)/$(DEMO)/ptmt.db
	# the report: 4 more interleaved default/tuned pairs (seeds 1-4) next to that one, then tuned vs default with a 95% CI
	$(DEMOENV) $(BIN)/ptmt report --run-ab --backend autonuma --workload gups --repeat 4 --seed 1 --duration 900 \
		--query-model $(CURDIR)/$(DEMO)/autonuma-model.npz --db sqlite:///$(CURDIR)/$(DEMO)/ptmt.db \
		--html $(CURDIR)/$(DEMO)/report.html

test: $(STAMP)
	$(BIN)/ruff check -q ptmt tests benchmarks scripts
	$(BIN)/python -m pytest

# Only the real-kernel guest tests (also part of `make test`; PTMT_TIERVM=skip leaves them out).
test-vm: $(STAMP)
	$(BIN)/python -m pytest -m vm tests/vm

clean:
	rm -rf $(VENV) $(DEMO) build dist *.egg-info
