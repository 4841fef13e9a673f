# The two set-up commands of the README: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck tools bench clean

# The C extensions (hatch_build.py) are compiled by the editable install: a changed source
# reinstalls.  The tools (a C compiler and Python's headers among them) come first.
C_SOURCES := $(wildcard src/railcar/*/*.c)

$(STAMP): pyproject.toml hatch_build.py $(C_SOURCES) | tools
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/railcar bench echo --seconds 3 --rounds 1

lint: $(STAMP)
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests
	$(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy

tools:
	PYTHON=$(PYTHON) scripts/install-tools

test: lint typecheck tools
	$(BIN)/pytest

bench: $(STAMP)
	$(BIN)/railcar bench echo --md BENCHMARKS.md
	$(BIN)/railcar bench idle --md BENCHMARKS.md
	$(BIN)/railcar bench reqrep --md BENCHMARKS.md
	$(BIN)/railcar bench load --md BENCHMARKS.md
	$(BIN)/railcar bench kv --md BENCHMARKS.md
	$(BIN)/railcar bench kvload --md BENCHMARKS.md
	$(BIN)/railcar bench kvmem --md BENCHMARKS.md
	$(BIN)/railcar bench http --md BENCHMARKS.md
	$(BIN)/railcar bench workers --md BENCHMARKS.md
	$(BIN)/railcar bench udp --md BENCHMARKS.md
	$(BIN)/railcar nats bench --md BENCHMARKS.md

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
