# Two commands for a newcomer: `make run` starts the service, `make test` runs every test.
# Both create the virtual environment (.venv) and install the project on first use; `make test`
# first runs .ci/setup, the machine set-up CI uses too (PostgreSQL and Chromium when missing).
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: install setup run test lint bench bench-smoke clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,dev]'
	touch $(STAMP)

install: $(STAMP)

# Debian packages the integration tests need (as root or with sudo), then the virtual environment.
setup:
	MAKE="$(MAKE)" .ci/setup

# Local demo: no CDS client authentication (development only). FHIR call-backs keep the production
# rules: https and on CRS_CDS_FHIR_SERVER_ALLOWLIST (an http test server also needs
# CRS_CDS_ALLOW_INSECURE_FHIR_SERVER=true in the environment).
run: $(STAMP)
	CRS_CDS_ALLOW_UNAUTHENTICATED=true $(VENV)/bin/crs-cds serve --host 127.0.0.1 --port 8080

test: setup
	$(PY) -m pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check cds_hooks tests bench
	$(VENV)/bin/ruff format --check cds_hooks tests bench
	$(VENV)/bin/mypy

bench: $(STAMP)
	$(PY) bench/run_bench.py

bench-smoke: $(STAMP)
	$(PY) bench/run_bench.py --smoke

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
