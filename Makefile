# GliomaGen artifact. The two commands a newcomer needs:
#   make reproduce   -- set up .venv and run the whole smoke reproduction (phantom data, CPU)
#   make test        -- set up what is missing and run the test suite
# and then:
#   make lab         -- JupyterLab at the repository root (notebooks/ and the executed runs/<profile>/notebooks/)
#   make paper       -- check the manuscript's includes (one published run) and build the PDF where LaTeX exists
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
PROFILE ?= smoke
# extra arguments for `gliomagen reproduce`, e.g. ARGS="--from 3 --to 5"
ARGS   ?=
PYTEST_ARGS ?=
STAMP  := $(VENV)/.installed

.PHONY: help install reproduce test test-fast chromium lab lint notebooks paper clean-run

help:
	@sed -n '1,7p' Makefile

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

# Progress per notebook on the terminal; everything the notebooks print goes to runs/$(PROFILE)/logs/reproduce.log.
reproduce: $(STAMP)
	$(BIN)/gliomagen reproduce --profile $(PROFILE) $(ARGS)

# The browser test of the reader-study page needs Debian's chromium (playwright never downloads a browser).
# Installed here when missing and we may (root with apt-get); otherwise the test is skipped and we say so.
CHROMIUM := /usr/bin/chromium
chromium:
	@if [ -x $(CHROMIUM) ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing chromium for the browser test (apt-get)"; \
	  (apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium chromium-driver) \
	    || echo "NOTE: apt-get could not install chromium"; \
	fi; \
	if [ ! -x $(CHROMIUM) ]; then \
	  echo "NOTE: tests/test_reader_study_browser.py will be SKIPPED: $(CHROMIUM) is missing"; \
	  echo "      (install it with: sudo apt-get install -y chromium chromium-driver)"; \
	fi

# -rs lists every skipped test with its reason at the end
test: $(STAMP) chromium
	$(BIN)/python -m pytest -rs $(PYTEST_ARGS)

# JupyterLab at the repository root, so that both notebooks/ and runs/<profile>/notebooks/ open.
lab: $(STAMP)
	$(BIN)/jupyter lab --ServerApp.root_dir="$(CURDIR)"

# Build the manuscript PDF (where LaTeX exists) after checking every generated include exists.
paper: $(STAMP)
	$(BIN)/gliomagen paper --profile $(PROFILE)

# ruff (style, imports) and mypy --strict on the package (settings in pyproject.toml)
lint: $(STAMP)
	$(BIN)/ruff check gliomagen tests notebooks benchmarks
	$(BIN)/ruff format --check gliomagen tests notebooks benchmarks
	$(BIN)/mypy

# the inner loop: everything but the slow tests (notebooks, nnU-Net, the end-to-end smoke run)
test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

clean-run:
	rm -rf runs/$(PROFILE)
