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

# ---------------------------------------------------------------------------------------------------- containers
# `make lock`: requirements.lock, the hash-pinned runtime dependencies of pyproject.toml plus the build backend
# (pip-compile --generate-hashes; pip-tools in its own environment). CPU torch from TORCH_INDEX (empty: only the
# indexes and find-links of pip's own configuration).
# `make wheelhouse`: the wheels of that lock in wheelhouse/ (git-ignored): the images then install with no index.
# `make compose-smoke`: both containers up for real on a Docker engine, a recommendation through the consumer's
# port, the live boundary audit (and its catch of deploy/compose.misconfigured.yml), then everything torn down.
LOCK_FILE ?= requirements.lock
LOCK_TOOLS ?= .venv-lock
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
PIP_TOOLS_VERSION ?= 7.6.2

.PHONY: lock wheelhouse compose-smoke

$(LOCK_TOOLS)/bin/pip-compile:
	$(PYTHON) -m venv $(LOCK_TOOLS)
	$(LOCK_TOOLS)/bin/pip install -q pip-tools==$(PIP_TOOLS_VERSION)

lock: $(LOCK_TOOLS)/bin/pip-compile
	nice -n 19 $(LOCK_TOOLS)/bin/pip-compile --quiet --generate-hashes --allow-unsafe --all-build-deps \
		--strip-extras --no-emit-index-url --no-emit-find-links $(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX)) \
		--output-file=$(LOCK_FILE) pyproject.toml

wheelhouse: $(LOCK_FILE)
	nice -n 19 $(PYTHON) -m pip download --quiet --no-deps --require-hashes --only-binary=:all: \
		$(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX)) -r $(LOCK_FILE) -d wheelhouse

compose-smoke:
	deploy/compose_smoke.sh
