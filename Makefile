# Two commands are all the set-up there is: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck unit bench torture clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Editable in "compat" mode: a plain path entry (.pth) that type checkers follow, so a user's
# `mypy --strict` on their own workflow finds mako_actors (the default mode's import hook hides it).
# constraints.txt pins the Werktag calendar's data (pyproject keeps the library's ranges).
$(STAMP): $(BIN)/python pyproject.toml Makefile constraints.txt
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]' -c constraints.txt --config-settings editable_mode=compat
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python examples/demo.py

lint: $(STAMP)
	$(BIN)/ruff check mako_actors stores tests examples benchmarks

typecheck: $(STAMP)
	$(BIN)/mypy mako_actors stores

unit: $(STAMP)
	$(BIN)/python -m pytest

test: lint typecheck unit

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_edifact.py
	$(BIN)/python benchmarks/bench_actors.py

# Crash, fuzz and exhaustion runs with checked invariants (minutes; not part of `make test`).
torture: $(STAMP)
	$(BIN)/python -m tests.torture.run

clean:
	rm -rf $(VENV) data .pytest_cache .mypy_cache .ruff_cache
