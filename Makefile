# Every target works on a fresh machine with only Python 3.11: .venv is (re)built
# from pyproject.toml whenever it is missing or older than pyproject.toml.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck pytest bench notebook clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,burst,zh]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/trialbench demo

test: lint typecheck pytest

lint: $(STAMP)
	$(BIN)/ruff check harness tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

# the untimed tests on two processes, then the timed ones (marked serial) alone: a timed
# test beside another test's load would measure that load
pytest: $(STAMP)
	$(BIN)/pytest -n 2 -m 'not serial'
	$(BIN)/pytest -m serial

# JupyterLab (the optional notebook extra, installed once) on the comparison notebook; it
# reads the newest run under results/ (make demo makes one), or RUN=results/<run-id>
notebook: $(VENV)/.notebook
	@ls -d results/*/ >/dev/null 2>&1 || { echo "no run under results/: run 'make demo' first"; exit 2; }
	TRIALBENCH_RUN="$(RUN)" $(BIN)/jupyter lab notebooks/compare_suppliers.ipynb \
		$(if $(filter 0,$(shell id -u)),--allow-root)

$(VENV)/.notebook: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[notebook]'
	touch $@

bench: $(STAMP)
	$(BIN)/python bench/run_bench.py

clean:
	rm -rf $(VENV) build *.egg-info
