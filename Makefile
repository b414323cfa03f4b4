# The two commands a new user runs: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
HOME_DIR ?= demo-home
SCALE ?= 1
PORT ?= 8000
FRESH ?=
# Test processes (pytest-xdist): whole files go to one process each (--dist loadfile),
# so a file's module fixtures are built once and its tests run in their written order;
# each process takes its files in the suite's order (--no-loadscope-reorder), as one
# process would: files that share a session fixture see it in the same order.
TEST_WORKERS ?= 2
XDIST := -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

.PHONY: install demo serve clean-demo test test-long bench lint format clean console-screenshots

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

install: $(VENV)/.installed

## demo: build a fresh demo home (bureaus, datasets, accounts) and serve it on PORT
## (an existing home is refused: `make serve` serves it as it is, FRESH=1 rebuilds it)
demo: install
	@if [ -e "$(HOME_DIR)" ] && [ "$(FRESH)" != 1 ]; then \
	  echo "$(HOME_DIR) exists (an earlier make demo): its tokens, versions and settings would"; \
	  echo "not match a fresh tour. Run 'make demo FRESH=1' (or 'make clean-demo', then"; \
	  echo "'make demo') to rebuild it, or 'make serve' to serve it as it is."; \
	  exit 1; \
	fi
	rm -rf "$(HOME_DIR)"
	$(VENV)/bin/sandbox --home $(HOME_DIR) demo --scale $(SCALE)
	SANDBOX_PORT=$(PORT) $(VENV)/bin/sandbox --home $(HOME_DIR) serve

## serve: serve the existing demo home on PORT
serve: install
	SANDBOX_PORT=$(PORT) $(VENV)/bin/sandbox --home $(HOME_DIR) serve

## clean-demo: delete the demo home
clean-demo:
	rm -rf "$(HOME_DIR)"

## test: the whole suite, bounded (PostgreSQL tests need initdb; .ci/run installs it),
## on TEST_WORKERS processes; it lists its 15 slowest steps (setup included): the suite
## must stay under 15 minutes
test: install
	$(PY) -m pytest -q $(XDIST) -m "not slow" --durations=15

## test-long: everything, with the long variants (slow tests, more fuzzing examples)
test-long: install
	$(PY) -m pytest -q $(XDIST) --hypothesis-profile=long

## console-screenshots: the README's screenshot of each role's console page (docs/img/),
## taken by the browser journeys in headless Chromium
console-screenshots: install
	CONSOLE_SCREENSHOTS=docs/img $(PY) -m pytest -q -p no:cacheprovider tests/console/test_journeys.py

bench: install
	$(PY) bench/report.py

## bench-venv-smartnoise: the peer's own virtualenv for bench/dp_accuracy.py
## (smartnoise-sql 1.0.10 pins pandas < 3 and opendp < 0.15; the bench makes it if missing)
bench-venv-smartnoise:
	$(PYTHON) -m venv .venv-smartnoise
	.venv-smartnoise/bin/python -m pip install -q smartnoise-sql==1.0.10

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
