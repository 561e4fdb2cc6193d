# make demo : create .venv, install, run jobs/quickstart.yaml end to end on a local Ray
# make test : same install, the floors and linters (make lint), then the whole test suite
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
EXTRAS := torch,tensorflow,xgboost,test

.PHONY: install demo lint test unit clean

# The install runs again only when pyproject.toml changed (the package is installed editable).
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip setuptools wheel
	$(BIN)/python -m pip install --quiet -e '.[$(EXTRAS)]' 'torch==2.13.0'
	@touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/raymlp data sample wine -o data/wine.csv
	$(BIN)/raymlp run jobs/quickstart.yaml

# import-linter checks the floors (DESIGN.md, "Package layout"); ruff and mypy settings are in pyproject.toml.
lint: install
	$(BIN)/lint-imports --no-cache
	$(BIN)/ruff check raymlp tests benchmarks tools
	$(BIN)/ruff format --check raymlp tests benchmarks tools
	$(BIN)/mypy

test: install lint
	$(BIN)/python -m pytest

unit: install
	$(BIN)/python -m pytest tests/unit

clean:
	rm -rf $(VENV) .raymlp data .pytest_cache .mypy_cache .ruff_cache .import_linter_cache
