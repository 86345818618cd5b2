# Two commands from a fresh clone:  `make train`  and  `make test`.
# Both create .venv and install the package with its dev extra the first time (and again when
# pyproject.toml changes).  ARGS passes Hydra overrides: make train ARGS="task=rings trainer=gpu"

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python

.PHONY: train test lint bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@

train: $(VENV)/.installed
	$(PY) train.py $(ARGS)

test: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -m "slow or not slow" $(ARGS)

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

clean:
	rm -rf logs .pytest_cache .ruff_cache
