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
# pyradiomics (needed by frd-score) has no wheel for Python 3.11: build it against the venv's numpy first.
$(STAMP): pyproject.toml $(BIN)/python
	$(BIN)/pip install torch==2.14.1 torchvision==0.29.1 versioneer numpy
	$(BIN)/pip install --no-build-isolation pyradiomics==3.0.1
	$(BIN)/pip install -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

reproduce: $(STAMP)
	$(BIN)/gliomagen reproduce --profile $(PROFILE) $(ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Build the manuscript PDF (where LaTeX exists) after checking every generated include exists.
paper: $(STAMP)
	$(BIN)/python -m gliomagen.paper --profile $(PROFILE)

lint: $(STAMP)
	$(BIN)/ruff check gliomagen tests notebooks
	$(BIN)/ruff format --check gliomagen tests notebooks

clean-run:
	rm -rf runs/$(PROFILE)
