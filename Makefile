# Two commands from a fresh clone:  `make train`  and  `make test`.
# Both create .venv and install the package with its dev extra the first time (and again when
# pyproject.toml or constraints.txt changes), at the versions pinned in constraints.txt.
# ARGS passes Hydra overrides: make train ARGS="task=rings trainer=gpu"

PYTHON      ?= python3
VENV        ?= .venv
PY          := $(VENV)/bin/python
# pinned versions of every dependency; CONSTRAINTS= installs the newest releases pyproject.toml allows
CONSTRAINTS ?= constraints.txt

.PHONY: install train test lint hooks lock bench clean

$(VENV)/.installed: pyproject.toml $(CONSTRAINTS)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]" $(if $(CONSTRAINTS),-c $(CONSTRAINTS))
	touch $@

install: $(VENV)/.installed

train: $(VENV)/.installed
	$(PY) train.py $(ARGS)

test: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -m "slow or not slow" $(ARGS)

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

hooks: $(VENV)/.installed  # ruff, ruff-format, nbstripout and a large-file check on every commit
	$(VENV)/bin/pre-commit install

lock:  # constraints.txt from a fresh venv holding the newest releases pyproject.toml allows
	rm -rf .venv-lock
	$(PYTHON) -m venv .venv-lock
	.venv-lock/bin/pip install --quiet -e ".[dev]"
	head -3 constraints.txt > constraints.new
	.venv-lock/bin/pip freeze --exclude-editable | grep -v '^#' >> constraints.new
	mv constraints.new constraints.txt
	rm -rf .venv-lock

clean:
	rm -rf logs .pytest_cache .ruff_cache
