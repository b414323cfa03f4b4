# The two commands a new user runs: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
HOME_DIR ?= demo-home
SCALE ?= 1

.PHONY: install demo test test-long bench lint format clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

install: $(VENV)/.installed

## demo: build a demo home (bureaus, datasets, accounts) and serve it
demo: install
	$(VENV)/bin/sandbox --home $(HOME_DIR) demo --scale $(SCALE)
	$(VENV)/bin/sandbox --home $(HOME_DIR) serve

## test: the whole suite, bounded (PostgreSQL tests need initdb; .ci/run installs it)
test: install
	$(PY) -m pytest -q -m "not slow"

## test-long: everything, with the long variants (slow tests, more fuzzing examples)
test-long: install
	$(PY) -m pytest -q --hypothesis-profile=long

bench: install
	$(PY) bench/report.py

## lint: ruff, the import contracts (import-linter) and mypy (strict on audit, core, query)
lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports
	$(VENV)/bin/mypy

format: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean:
	rm -rf $(VENV) $(HOME_DIR) .pytest_cache .mypy_cache .import_linter_cache build *.egg-info
