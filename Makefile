# The two commands of the README: `make serve` and `make test` (plus `make test-distributed`, `make demo`).
# The interpreter of .venv: the distribution's /usr/bin/python3 when it is 3.11 or newer and can make a venv
# (Debian and Ubuntu build it with PGO and LTO: openhi's request path runs ~8 % more frames/s on it than on
# a default pyenv build; docs/deploy.md), else python3 from PATH. `make PY=...` chooses another.
PY ?= $(shell /usr/bin/python3 -c 'import sys, venv, ensurepip; sys.exit(sys.version_info < (3, 11))' >/dev/null 2>&1 && echo /usr/bin/python3 || echo python3)
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8080
DATA ?= ./openhi-data

.PHONY: serve test test-distributed test-packaging demo install install-test lint typecheck bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

# Debian packages the tests drive side by side with openhi: Orthanc + its DICOMweb plugin (the peer the
# DICOMweb and DIMSE answers are compared with), dcmtk (the DICOM networking tools devices resemble) and
# chromium (the browser the console and viewer tests drive). Installed when missing (root).
TEST_DEBS := orthanc orthanc-dicomweb dcmtk chromium
$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	@missing=$$(for p in $(TEST_DEBS); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; fi
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

serve: $(VENV)/.installed
	$(BIN)/openhi serve --host $(HOST) --port $(PORT) --data-dir $(DATA)

lint: install-test
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: install-test
	$(BIN)/mypy src

test: install-test
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy src
	$(BIN)/python -m pytest -q $(PYTEST_ARGS); rc=$$?; if [ $$rc -eq 5 ]; then echo "pytest: no tests collected"; exit 1; fi; exit $$rc

# The contract suite again, against the distributed deployment: PostgreSQL (OPENHI_TEST_POSTGRES_URL,
# default 127.0.0.1:5432/test) + SeaweedFS, 2 API processes, 2 import workers (docs/deploy.md).
test-distributed: install-test
	OPENHI_TEST_DEPLOYMENT=distributed $(BIN)/python -m pytest -q tests/contract $(PYTEST_ARGS); rc=$$?; if [ $$rc -eq 5 ]; then echo "pytest: no tests collected"; exit 1; fi; exit $$rc

# The distribution from a fresh environment: sdist + wheel build and `twine check`; a venv with only the
# core install of the wheel serves and transcodes pydicom's JPEG-LS / JPEG 2000 lossless files to HTJ2K;
# the same venv with the `testing` extra runs a user's test of the pytest plugin (tests/packaging/run.sh).
test-packaging: install-test
	tests/packaging/run.sh $(BIN)/python

# PostgreSQL-backed openhi on loopback: 2 API processes, 2 workers, SeaweedFS; Ctrl-C stops everything.
demo: install-test
	$(BIN)/python -m openhi.demo --port $(PORT) $(DEMO_ARGS)

# The peer benchmark (docs/benchmarks.md): Orthanc, nginx and wrk come from Debian's packages.
BENCH_DEBS := orthanc orthanc-dicomweb orthanc-gdcm nginx wrk gcc
bench: $(BIN)/python
	@missing=$$(for p in $(BENCH_DEBS); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; fi
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	$(BIN)/python bench/peers.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info
