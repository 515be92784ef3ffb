# `make run` and `make test` each bring the local virtualenv up to date with
# pyproject.toml (only when it changed, so a second `make run` starts at once).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test check bench clean

run: $(VENV)/.installed
	$(BIN)/python -m bot

check: $(VENV)/.installed
	$(BIN)/python -m bot check

test: $(VENV)/.installed-test
	$(BIN)/python -m pytest

# Benchmarks against the fakes on loopback (not part of `make test`); about 5
# minutes. `$(BIN)/python -m bench --quick` is a short smoke run.
bench: $(VENV)/.installed-bench
	$(BIN)/python -m bench

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml $(VENV)/bin/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml $(VENV)/bin/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@ $(VENV)/.installed

$(VENV)/.installed-bench: pyproject.toml $(VENV)/bin/python
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	touch $@ $(VENV)/.installed-test $(VENV)/.installed

clean:
	rm -rf $(VENV) *.egg-info
