# Every target works on a fresh machine with only Python 3.11: .venv is (re)built
# from pyproject.toml whenever it is missing or older than pyproject.toml.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck pytest bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,zh]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/trialbench demo

test: lint typecheck pytest

lint: $(STAMP)
	$(BIN)/ruff check harness tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	$(BIN)/pytest

bench: $(STAMP)
	$(BIN)/python bench/sim_throughput.py

clean:
	rm -rf $(VENV) build *.egg-info
