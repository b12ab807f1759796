# Two commands do everything on a fresh clone: `make run` and `make test`.
# Each creates .venv when it is missing and installs the project into it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test

.PHONY: run test setup repro-check bench lr-grid clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# Reinstall when the dependency list changes.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(TEST_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP) $@

setup: $(STAMP)

# PATH: the stage commands in dvc.yaml call `python`, which must be the venv's.
run: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/dvc repro

test: $(TEST_STAMP)
	$(BIN)/python -m pytest -q --durations=10

# Users' CI: the committed profile must reproduce repro/expected/ (also run by `make test`).
repro-check: $(STAMP)
	$(BIN)/python repro/check.py

bench: $(STAMP)
	$(BIN)/python benchmarks/bench.py

# Final test accuracy against max LR at each rule's pick and a grid (full scale: a GPU); options in
# LR_GRID_ARGS, e.g. make lr-grid LR_GRID_ARGS="--jobs 2". Restartable: finished runs are kept.
lr-grid: $(STAMP)
	$(BIN)/python benchmarks/lr_grid.py $(LR_GRID_ARGS)

clean:
	rm -rf $(VENV)
