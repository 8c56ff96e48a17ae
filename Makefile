# Every target does its own set-up on a fresh machine: a .venv, the CPU build of torch, the package.
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
export OMP_NUM_THREADS ?= 2
# Tests and training sleep instead of spinning at OpenMP barriers: on a shared 2-core machine a
# spinning team waits a whole time slice whenever another process holds a core. (Not for
# bench, which measures the built-in with torch's defaults.)
test test-all demo: export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: install test test-all lint format bench demo clean

$(PY):
	$(PYTHON) -m venv $(VENV)

# torch first, pinned: this machine kind keeps the CPU build of this version on disk, while an
# unpinned torch (or one pulled in as a dependency) is a multi-GB CUDA build. Everything after it
# is installed under a constraint that pins the torch now installed, so that no dependency
# (transformers, accelerate, lightning in the dev extra) can replace it. timm is installed with
# --no-deps: it requires torchvision, whose PyPI wheels are CUDA builds that do not load beside
# the CPU torch; the parity tests load only its torch-only loss file.
$(STAMP): $(PY) pyproject.toml
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH)"
	$(PY) -c "import torch; print('torch==' + torch.__version__.split('+')[0])" > $(VENV)/torch-pin.txt
	$(PY) -m pip install -q -c $(VENV)/torch-pin.txt -e ".[dev]"
	$(PY) -m pip install -q --no-deps "timm>=1.0"
	touch $(STAMP)

install: $(STAMP)

lint: install
	$(PY) -m ruff check src tests benchmarks examples
	$(PY) -m ruff format --check src tests benchmarks examples
	$(PY) -m mypy

format: install
	$(PY) -m ruff format src tests benchmarks examples
	$(PY) -m ruff check --fix src tests benchmarks examples

test: lint
	$(PY) -m pytest -q -m "not slow and not gpu" tests

test-all: lint
	$(PY) -m pytest -q tests

bench: install
	$(PY) -m labelsmooth.experiment.cli bench --out benchmarks/results

demo: install
	$(PY) -m labelsmooth.experiment.cli compare

clean:
	rm -rf $(VENV) build dist *.egg-info src/*.egg-info .pytest_cache .mypy_cache .ruff_cache
