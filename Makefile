# `make run` and `make test` create .venv on first use and reinstall only when pyproject.toml changes.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.ptmt-installed

.PHONY: run test install clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# CPU-only torch first, pinned, so stable-baselines3 never resolves to a CUDA build.
	$(BIN)/pip install --disable-pip-version-check -q torch==2.13.0
	$(BIN)/pip install --disable-pip-version-check -q -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/ptmt status --platform sim
	$(BIN)/ptmt knobs --backend tpp --platform sim

test: $(STAMP)
	$(BIN)/ruff check -q ptmt tests benchmarks scripts
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) build dist *.egg-info
