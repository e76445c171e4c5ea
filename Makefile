# kubeling: make up (install + start a local cluster), make test (install + every test)
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
PROTOS := $(shell find protos -name '*.proto' | sort)

.PHONY: install proto proto-check up down test unit integration e2e bench node-deps clean

install:
	./deploy/install-deps.sh

# Regenerates the Python stubs next to the package each proto declares.
proto: install
	$(PY) -m grpc_tools.protoc -Iprotos --python_out=. --pyi_out=. --grpc_python_out=. $(PROTOS)

# Fails when the committed stubs differ from what `make proto` generates.
proto-check: install
	@tmp=$$(mktemp -d); trap 'rm -rf $$tmp' EXIT; \
	$(PY) -m grpc_tools.protoc -Iprotos --python_out=$$tmp --pyi_out=$$tmp --grpc_python_out=$$tmp $(PROTOS); \
	for f in $$(cd $$tmp && find . -name '*.py' -o -name '*.pyi'); do \
		cmp -s $$tmp/$$f $$f || { echo "stale generated file: $$f (run make proto)"; exit 1; }; \
	done; echo "generated stubs are up to date"

up: install
	$(VENV)/bin/kubeling up

down:
	$(VENV)/bin/kubeling down

node-deps:
	cd tests/node && npm install --no-audit --no-fund --silent

test: install proto-check node-deps
	$(PY) -m pytest -q tests/unit tests/integration tests/e2e

unit: install
	$(PY) -m pytest -q tests/unit

integration: install
	$(PY) -m pytest -q tests/integration

# One fresh 3-node cluster, the scenarios the project promises, a line of figures each.
e2e: install
	$(PY) -m pytest -q -s tests/e2e/scenarios/test_scenarios.py

bench: install
	$(PY) -m tests.bench

clean:
	rm -rf $(VENV) tests/node/node_modules
