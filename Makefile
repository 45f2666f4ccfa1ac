# One command per task: setup, run, test, lint, bench. Every target is idempotent and does
# nothing that is already done: stamps under .venv/ record what was installed from what.

SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
HOST ?= 127.0.0.1
PORT ?= 8002

RUST_SRC := $(wildcard core-rs/src/*.rs) core-rs/Cargo.toml Cargo.toml Cargo.lock
EXT := python/tradeengine/_core.abi3.so
PLUGIN_DIRS := $(patsubst %/pyproject.toml,%,$(wildcard plugins/*/pyproject.toml))
PLUGIN_FILES := $(shell find plugins -type f -not -path '*/__pycache__/*' -not -path '*.egg-info/*' -not -path '*/build/*' 2>/dev/null)
PLUGINS_STAMP := $(VENV)/.plugins-stamp

.PHONY: setup tools run test test-rust test-python lint fmt bench bench-peers clean

setup: $(EXT) $(PLUGINS_STAMP)

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade 'pip>=24' 'maturin>=1.7,<2'

# maturin builds the Rust extension in release mode into python/tradeengine/ and installs the
# package editable with its dependencies and the dev extra.
$(EXT): $(RUST_SRC) pyproject.toml | $(PY)
	VIRTUAL_ENV=$(CURDIR)/$(VENV) PATH=$(CURDIR)/$(VENV)/bin:$$PATH \
		$(VENV)/bin/maturin develop --release --extras dev --quiet
	touch $@

# Plugins are installed exactly as a third party's would be: pip, from their own directory.
$(PLUGINS_STAMP): $(PLUGIN_FILES) $(EXT)
	$(if $(PLUGIN_DIRS),$(PIP) install -q $(addprefix ./,$(PLUGIN_DIRS)))
	touch $@

run: setup
	$(VENV)/bin/tradeengine serve --host $(HOST) --port $(PORT)

test: setup tools test-rust test-python

# System tools the tests need, from Debian's packages when missing: PostgreSQL (the store
# tests start a throwaway cluster of their own) and promtool (the alert rules).
tools:
	bash scripts/ensure-postgres.sh
	bash scripts/ensure-promtool.sh

test-rust:
	cargo test --release --quiet
	cargo clippy --all-targets --all-features --quiet -- -D warnings

test-python: setup
	$(VENV)/bin/pytest -q --benchmark-disable

lint: setup
	$(VENV)/bin/ruff check python tests benches plugins
	$(VENV)/bin/ruff format --check python tests benches plugins
	$(VENV)/bin/mypy
	$(PY) -m mypy.stubtest tradeengine._core
	$(VENV)/bin/hadolint Dockerfile
	cargo fmt --all --check
	cargo clippy --all-targets --all-features --quiet -- -D warnings

fmt: setup
	$(VENV)/bin/ruff format python tests benches plugins
	$(VENV)/bin/ruff check --fix python tests benches plugins
	cargo fmt --all

bench: setup
	$(VENV)/bin/pytest benches -q --benchmark-only --benchmark-columns=min,median,mean,ops,rounds
	$(VENV)/bin/tradeengine bench all

# NautilusTrader side by side with tradeengine, in one process run (installs the bench-peers extra).
bench-peers: setup
	$(PIP) install -q 'nautilus_trader==1.221.0'
	$(PY) benches/peers/nautilus.py --orders 20000

clean:
	rm -rf $(VENV) target $(EXT) .pytest_cache .mypy_cache .ruff_cache .hypothesis .benchmarks
