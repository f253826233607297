# Two commands on a fresh machine: `make repro` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# A CPU machine gets the CPU build of torch (an unpinned torch pulls gigabytes of CUDA packages).
TORCH ?= torch==2.13.0

# `dvc plots show` without internet: vega, vega-lite and vega-embed from the npm registry (the versions DVC's
# own page loads from a CDN), inlined into one page template that .dvc/config.local points DVC at.
PLOTS_JS := vega@5.20.2 vega-lite@5.2.0 vega-embed@6.18.2
PLOTS_PAGE := build/plots/offline.html

.PHONY: repro test bench install clean-venv plots plots-page

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip setuptools wheel numpy

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet "$(TORCH)"
	$(BIN)/pip install --quiet -e ".[test]"
	touch $@

install: $(VENV)/.installed

repro: install
	PATH="$(CURDIR)/$(BIN):$$PATH" dvc repro

test: install
	$(BIN)/python -m pytest

$(PLOTS_PAGE): tools/offline_plots.py
	mkdir -p build/plots
	cd build/plots && npm pack --silent $(PLOTS_JS) > /dev/null
	$(BIN)/python tools/offline_plots.py build/plots $@

plots-page: install $(PLOTS_PAGE)
	$(BIN)/dvc config --local plots.html_template "$(CURDIR)/$(PLOTS_PAGE)"

plots: plots-page
	PATH="$(CURDIR)/$(BIN):$$PATH" dvc plots show

bench: install
	$(BIN)/python -m pytest --benchmark-only --benchmark-enable tests
	$(BIN)/headtex bench render
	$(BIN)/headtex bench reconstruct

clean-venv:
	rm -rf $(VENV)
