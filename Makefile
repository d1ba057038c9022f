# The two commands a new user needs: `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test lint bench clean

$(STAMP): pyproject.toml benchmarks/pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt -e '.[dev]' -e ./benchmarks
	touch $(STAMP)

install: $(STAMP)

# make demo KEEP=1 leaves the pipeline and its police console running until Ctrl-C.
demo: install
	$(BIN)/tagtrail demo $(if $(KEEP),--keep-running)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

test: install lint
	$(BIN)/python -m pytest

bench: install
	$(BIN)/python -m benchmarks.run

clean:
	rm -rf $(VENV) data .pytest_cache
