# GliomaGen artifact. The two commands a newcomer needs:
#   make reproduce   -- set up .venv and run the whole smoke reproduction (phantom data, CPU)
#   make test        -- set up what is missing and run the test suite
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
PROFILE ?= smoke
# extra arguments for `gliomagen reproduce`, e.g. ARGS="--from 3 --to 5"
ARGS   ?=
PYTEST_ARGS ?=
STAMP  := $(VENV)/.installed

.PHONY: help install reproduce test lint notebooks paper clean-run

help:
	@sed -n '1,4p' Makefile

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip setuptools wheel

# Re-install whenever the project's dependency list changes.
$(STAMP): pyproject.toml $(BIN)/python
	$(BIN)/pip install -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

reproduce: $(STAMP)
	$(BIN)/gliomagen reproduce --profile $(PROFILE) $(ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check gliomagen tests notebooks
	$(BIN)/ruff format --check gliomagen tests notebooks

clean-run:
	rm -rf runs/$(PROFILE)
