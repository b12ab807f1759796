# Two commands do everything on a fresh clone: `make run` and `make test`.
# Each creates .venv when it is missing and installs the project into it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test
# The page `dvc plots show`/`diff` draw on, with vega, vega-lite and vega-embed inlined so the charts draw
# offline; .dvc/config names it (plots.html_template). Generated from an installed package, never committed.
PLOTS_PAGE := .dvc/offline_page.html

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

$(PLOTS_PAGE): onecycle/plots_template.py $(STAMP)
	$(BIN)/python -m onecycle.plots_template

setup: $(STAMP) $(PLOTS_PAGE)

# PATH: the stage commands in dvc.yaml call `python`, which must be the venv's.
run: $(STAMP) $(PLOTS_PAGE)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/dvc repro

test: $(TEST_STAMP) $(PLOTS_PAGE)
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
