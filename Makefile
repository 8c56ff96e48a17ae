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
# unpinned torch (or one pulled in as a dependency) is a multi-GB CUDA build.
$(STAMP): $(PY) pyproject.toml
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[dev]"
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
	$(PY) -m labelsmooth.cli bench --out benchmarks/results

demo: install
	$(PY) -m labelsmooth.cli compare

clean:
	rm -rf $(VENV) build dist *.egg-info src/*.egg-info .pytest_cache .mypy_cache .ruff_cache
