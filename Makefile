# make demo : create .venv, install, run jobs/quickstart.yaml end to end on a local Ray
# make test : same install, the floors and linters (make lint), then the whole test suite
# make unit : same install, then the unit tests only
# Both make sure Chromium is installed first: the HTML reports are tested as a person sees them (headless).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
EXTRAS := torch,tensorflow,xgboost,test

.PHONY: install demo lint test unit chromium clean

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

# Headless Chromium renders the HTML reports in the tests (tests/browser.py). Installed from the system's
# packages when missing: as root directly (apt-get update only when the install fails on a stale index);
# anyone else is told what to install.
chromium:
	@command -v chromium >/dev/null && exit 0; \
	if [ "$$(id -u)" != 0 ]; then \
		echo "Chromium is missing: the tests render the HTML reports with it. Install it as root:" >&2; \
		echo "  apt-get install -y --no-install-recommends chromium" >&2; \
		exit 1; \
	fi; \
	export DEBIAN_FRONTEND=noninteractive; \
	apt-get install -y --no-install-recommends chromium \
		|| { apt-get update && apt-get install -y --no-install-recommends chromium; }

test: install chromium lint
	$(BIN)/python -m pytest

unit: install chromium
	$(BIN)/python -m pytest tests/unit

clean:
	rm -rf $(VENV) .raymlp data .pytest_cache .mypy_cache .ruff_cache .import_linter_cache
