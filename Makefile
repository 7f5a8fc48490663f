# Two commands from a fresh clone: `make demo` and `make test`. Each creates .venv if needed:
# `make demo` installs only the package and its demo extra (requirements-demo.txt), `make test`
# the whole development environment (requirements-dev.txt).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_STAMP := $(VENV)/.demo-installed

.PHONY: demo test lint bench bench-gpu gpu-check clean

$(STAMP): requirements-dev.txt requirements-peers.txt pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	# peer optimizers for the parity tests, torch held at the pin (-c); timm without its
	# torchvision (its optimizer files are loaded directly)
	$(BIN)/python -m pip install --quiet -c requirements-dev.txt -r requirements-peers.txt
	$(BIN)/python -m pip install --quiet --no-deps timm==1.0.31
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $(STAMP)

$(DEMO_STAMP): requirements-demo.txt pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-demo.txt
	touch $(DEMO_STAMP)

demo: $(DEMO_STAMP)
	$(BIN)/adamkit demo

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks examples
	$(BIN)/ruff format --check src tests benchmarks examples

test: $(STAMP) lint
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/adamkit bench

bench-gpu: $(STAMP)  # on a CUDA machine
	$(BIN)/python benchmarks/gpu.py

OUT ?= gpu-check
gpu-check: $(STAMP)  # on a CUDA machine: CUDA tests, adamkit check, benchmarks/gpu.py -> $(OUT)/
	$(BIN)/python benchmarks/gpu_check.py $(OUT)

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache .ruff_cache
