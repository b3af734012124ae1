# AuditSeal: `make test` and `make demo` are all a new user needs.
# Downloads and builds are cached in $(AUDITSEAL_CACHE) (default ~/.cache/auditseal), outside the checkout.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
AUDITSEAL_CACHE ?= $(if $(XDG_CACHE_HOME),$(XDG_CACHE_HOME),$(HOME)/.cache)/auditseal
export AUDITSEAL_CACHE
export PIP_CACHE_DIR ?= $(AUDITSEAL_CACHE)/pip

.PHONY: venv up down status test test-cluster unit lint deploy-check demo bench bench-quick bench-pipeline clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml setup.py $(wildcard pipeline/native/*.pyx pipeline/native/*.pxd)
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "AuditSeal needs Python >= 3.11; set PYTHON=python3.11 or newer")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check --upgrade pip
	$(BIN)/pip install -q --disable-pip-version-check -e '.[pipeline,test,bench]'
	@touch $@

up: venv
	$(BIN)/auditseal dev up

down: venv
	$(BIN)/auditseal dev down

status: venv
	$(BIN)/auditseal dev status

# unit tests need nothing running; `make test` brings the stack up and runs everything
unit: venv
	$(BIN)/pytest tests/unit

# ruff over the whole tree; mypy --strict over the integrity core, the wire format and the archive contract
lint: venv
	$(BIN)/ruff check pipeline connectors tests bench deploy
	$(BIN)/mypy

# the helm chart and docker-compose.yml: lint, render, Kubernetes/Compose schemas, agreement with dev up
# (builds helm once from the Go module proxy into the cache; needs nothing running)
deploy-check: venv
	$(BIN)/pytest tests/deployment

# everything, the three-node cluster's failover test included (it brings up a stack of its own)
test: venv lint
	$(BIN)/auditseal dev up
	$(BIN)/pytest

# the three-node cluster's failover test alone (its own `dev up --brokers 3` stack)
test-cluster: venv
	$(BIN)/pytest -m cluster

demo: venv
	$(BIN)/auditseal demo

# each stage bench long enough that its ramp costs its figure under 5%, start-up printed beside it (README, Benchmarks:
# the four stage benches took ~31 min at load 12-30).
# `make bench-quick`: the same benches, short (start-up shares over 5% are flagged in their output)
bench: venv
	$(BIN)/auditseal dev up --no-check
	eval "$$($(BIN)/auditseal dev env --role producer)" && $(BIN)/python -m bench.producer
	$(BIN)/python -m bench.sealer
	$(BIN)/python -m bench.witness
	$(BIN)/python -m bench.keys
	$(BIN)/python -m bench.sink
	$(BIN)/python -m bench.verify
	$(BIN)/python -m bench.privacy
	$(BIN)/python -m bench.siem

bench-quick: venv
	$(BIN)/auditseal dev up --no-check
	eval "$$($(BIN)/auditseal dev env --role producer)" && $(BIN)/python -m bench.producer --seconds 5 --rounds 1
	$(BIN)/python -m bench.sealer --events 200000 --rounds 1
	$(BIN)/python -m bench.sink --records 300000 --rounds 1
	$(BIN)/python -m bench.verify --records 200000 --runs 1

# every stage at once, 10 minutes per offered rate (about an hour): see bench/pipeline.py
bench-pipeline: venv
	$(BIN)/auditseal dev up --no-check
	$(BIN)/python -m bench.pipeline

clean:
	-$(BIN)/auditseal dev down --purge
	rm -rf $(VENV) *.egg-info .pytest_cache .hypothesis
