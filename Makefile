# Set-up is one idempotent step: a second `make train` reinstalls nothing.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.losslab-installed
ARGS   ?=

.PHONY: install train test test-fast lint bench gpu-kit clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev]"
	$(PY) -m compileall -q src scripts   # bytecode now, also where PYTHONDONTWRITEBYTECODE is set
	touch $(STAMP)

train: install
	$(PY) train.py $(ARGS)

test: install
	$(PY) -m pytest -q $(ARGS)

test-fast: install
	$(PY) -m pytest -q -m "not slow" $(ARGS)

lint: install
	$(VENV)/bin/ruff check .

bench: install
	$(PY) scripts/bench.py $(ARGS)

# the wheels a lent GPU machine lacks (pure Python), for scripts/gpu_checks.sh to carry along
GPU_KIT_PKGS := hydra-core|omegaconf|antlr4-python3-runtime|mnist1d
gpu-kit: install
	rm -rf gpu_kit/wheels
	$(PY) -m pip wheel -q --no-deps -w gpu_kit/wheels \
		$$($(PY) -m pip freeze | grep -iE '^($(GPU_KIT_PKGS))==')
	ls gpu_kit/wheels

clean:
	rm -rf outputs multirun lightning_logs .pytest_cache
