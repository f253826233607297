# Two commands on a fresh machine: `make repro` and `make test`. Both install exactly the lock first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# One lock per Python version (Linux x86-64), every package pinned with its hashes, torch the CPU build.
PYTHON_VERSION := $(shell $(PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])')
LOCK := requirements/lock-py$(PYTHON_VERSION).txt
# Where `make lock` finds torch's CPU build: pip's find-links where this machine keeps the wheel, else
# PyTorch's CPU index (PyPI's Linux torch is the CUDA build).
TORCH_SOURCE ?= $(if $(PIP_FIND_LINKS),--find-links $(PIP_FIND_LINKS),--extra-index-url https://download.pytorch.org/whl/cpu)
# `make lock UPGRADE="--upgrade-package numpy"` moves one package; `UPGRADE=--upgrade` moves everything;
# `make lock LOCK_PYTHON=3.12` writes another Python's lock (resolved for it; this venv's uv does the work).
UPGRADE ?=
LOCK_PYTHON ?= $(PYTHON_VERSION)

# `dvc plots show` without internet: vega, vega-lite and vega-embed from the npm registry (the versions DVC's
# own page loads from a CDN), inlined into one page template that .dvc/config.local points DVC at.
PLOTS_JS := vega@5.20.2 vega-lite@5.2.0 vega-embed@6.18.2
PLOTS_PAGE := build/plots/offline.html

.PHONY: repro test bench install lock clean-venv plots plots-page

$(LOCK):
	@echo "error: no lock for Python $(PYTHON_VERSION) ($(LOCK)); locked: $(notdir $(wildcard requirements/lock-py*.txt)). Use PYTHON=python3.11 or see README 'Environment'"; exit 1

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Exactly the lock: every file hash-checked, nothing resolved.
$(VENV)/.locked: $(BIN)/python $(LOCK)
	$(BIN)/python -m pip install --quiet --require-hashes --no-deps -r $(LOCK)
	touch $@

# The project on top, without resolving again; then the venv must equal the lock (what it does not hold is
# removed). The offline plots page whenever npm is present, so a plain `dvc plots show` draws offline.
$(VENV)/.installed: $(VENV)/.locked pyproject.toml requirements/lock.in
	$(BIN)/python tools/environment.py check $(LOCK)
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	$(BIN)/python tools/environment.py sync $(LOCK)
	@if command -v npm >/dev/null 2>&1; then \
	  timeout 300 $(MAKE) --no-print-directory plots-page || echo "offline plots page not built (npm could not fetch vega): dvc plots show loads vega from the internet; retry with make plots-page"; \
	else echo "npm not found: dvc plots show will load vega from the internet; install Node.js/npm, then make plots-page"; fi
	touch $@

install: $(VENV)/.installed

# Regenerate the lock from pyproject.toml and requirements/lock.in; pins already in it stay unless UPGRADE moves them.
lock: $(VENV)/.locked
	$(BIN)/uv pip compile pyproject.toml requirements/lock.in --all-extras --generate-hashes --quiet \
	  --python-version $(LOCK_PYTHON) --python-platform x86_64-manylinux_2_28 $(TORCH_SOURCE) $(UPGRADE) \
	  --custom-compile-command "make lock" -o requirements/lock-py$(LOCK_PYTHON).txt

repro: install
	PATH="$(CURDIR)/$(BIN):$$PATH" dvc repro

test: install
	$(BIN)/python -m pytest

$(PLOTS_PAGE): tools/offline_plots.py
	mkdir -p build/plots
	cd build/plots && npm pack --silent $(PLOTS_JS) > /dev/null
	$(BIN)/python tools/offline_plots.py build/plots $@

plots-page: $(VENV)/.locked $(PLOTS_PAGE)
	$(BIN)/dvc config --local plots.html_template "$(CURDIR)/$(PLOTS_PAGE)"

plots: plots-page
	PATH="$(CURDIR)/$(BIN):$$PATH" dvc plots show

bench: install
	$(BIN)/python -m pytest --benchmark-only --benchmark-enable tests
	$(BIN)/headtex bench render
	$(BIN)/headtex bench reconstruct

clean-venv:
	rm -rf $(VENV)
