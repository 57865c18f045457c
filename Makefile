# Two entry points for a fresh machine: `make demo` and `make test`.
# Both create .venv (once, again when pyproject.toml changes) and install wsss into it;
# `make test` adds pytest and ruff, and the optional C++ CRF (pydensecrf) that the tests
# compare against.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test test-fast test-all lint bench

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.test: $(VENV)/.installed
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

# the tests also check the torch CRF against pydensecrf, which needs a C++ compiler
$(VENV)/.pydensecrf: $(VENV)/.test
	$(BIN)/python -m pip install --quiet -e '.[test,pydensecrf]'
	touch $@

demo: $(VENV)/.installed  ## install, then run the toy pipeline end to end on the CPU
	$(BIN)/wsss demo --workdir wsss-demo

test: $(VENV)/.pydensecrf  ## install (with pydensecrf), then run the test suite (slow end-to-end runs excluded)
	$(BIN)/python -m pytest -q

test-fast: $(VENV)/.test  ## the edit loop: ops, golden vectors, store, data (a minute or two)
	$(BIN)/python -m pytest -q -m 'not slow and not integration'

test-all: $(VENV)/.pydensecrf  ## every test, slow ones included
	$(BIN)/python -m pytest -q -m ''

lint: $(VENV)/.test
	$(BIN)/ruff check wsss_cli tests bench

bench: $(VENV)/.installed  ## the benchmark tables (bench/results/*.json)
	$(BIN)/python bench/random_walk.py
	$(BIN)/python bench/pamr.py
	$(BIN)/python bench/cam_methods.py
