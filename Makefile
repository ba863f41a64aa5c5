# Two commands for a newcomer: `make run` starts the service, `make test` runs every test.
# Both create the virtual environment (.venv) and install the project on first use.
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: install run test lint bench bench-smoke clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,dev]'
	touch $(STAMP)

install: $(STAMP)

# Local demo: no CDS client authentication (development only), http FHIR servers allowed.
run: $(STAMP)
	CRS_CDS_ALLOW_UNAUTHENTICATED=true $(VENV)/bin/crs-cds serve --host 127.0.0.1 --port 8080

test: $(STAMP)
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
