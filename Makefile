# Mailroom: `make run` starts the app, `make test` runs every test.
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run demo flower test lint env bench help

help:
	@echo "make run    - install, migrate, and start web, workers and beat on 127.0.0.1:5000"
	@echo "make demo   - the app with a demo mailbox and a local OAuth server (see the README)"
	@echo "make flower - Flower on 127.0.0.1:5555 (needs FLOWER_BASIC_AUTH=user:password)"
	@echo "make test   - install everything the tests need and run them all"
	@echo "make lint   - ruff and mypy"
	@echo "make env    - write a .env with fresh SECRET_KEY and ENCRYPTION_KEYS (kept if present)"
	@echo "make bench  - connector throughput benchmark against a local Dovecot"

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

env: $(STAMP)
	$(PY) launcher.py --write-env-only

run: $(STAMP)
	$(PY) launcher.py

demo: $(STAMP)
	./scripts/install-system-packages.sh
	$(PY) -m devservers.demo $(DEMO_ARGS)

flower: $(STAMP)
	$(PY) scripts/flower.py

test: $(STAMP)
	./scripts/install-system-packages.sh
	$(PY) -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy .

bench: $(STAMP)
	./scripts/install-system-packages.sh
	$(PY) -m benchmarks.connector_throughput
