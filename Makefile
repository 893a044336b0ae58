# GD-REC: the README's commands. `make demo` sets up .venv and runs both services end to end.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install demo demo-full test lint

$(BIN)/gdrec-demo: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

install: $(BIN)/gdrec-demo

demo: install
	$(BIN)/gdrec-demo

demo-full: install
	$(BIN)/gdrec-demo --full

test: install
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check .
