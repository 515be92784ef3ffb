# `make run` and `make test` each bring the local virtualenv up to date with
# pyproject.toml (only when it changed, so a second `make run` starts at once).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test check clean

run: $(VENV)/.installed
	$(BIN)/python -m bot

check: $(VENV)/.installed
	$(BIN)/python -m bot check

test: $(VENV)/.installed-test
	$(BIN)/python -m pytest

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml $(VENV)/bin/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml $(VENV)/bin/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@ $(VENV)/.installed

clean:
	rm -rf $(VENV) *.egg-info
