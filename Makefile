# The two commands: `make demo` (set up, seed a local demo fleet, serve the app) and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.runtool-installed

.PHONY: setup demo test lint bench clean

setup: $(STAMP)

# constraints.txt pins the whole dependency tree, so `make test` tests exactly the versions deployments install.
$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[test]'
	@touch $(STAMP)

demo: setup
	$(BIN)/runtool demo up

lint: setup
	$(BIN)/ruff check runtool tests benchmarks
	$(BIN)/mypy

test: lint
	$(BIN)/pytest

bench: setup
	$(BIN)/python -m benchmarks.inventory

clean:
	rm -rf $(VENV) .demo test-artifacts .pytest_cache .mypy_cache .ruff_cache
