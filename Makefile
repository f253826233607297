# Two commands on a fresh machine: `make repro` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# A CPU machine gets the CPU build of torch (an unpinned torch pulls gigabytes of CUDA packages).
TORCH ?= torch==2.13.0

.PHONY: repro test bench install clean-venv

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

bench: install
	$(BIN)/python -m pytest --benchmark-only --benchmark-enable tests
	$(BIN)/headtex bench render

clean-venv:
	rm -rf $(VENV)
