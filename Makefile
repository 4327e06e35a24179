# The README's two commands are `make demo` and `make test`; both do all set-up themselves.
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# Independent test modules run in parallel; the machines here have 2 cores.
PYTEST_WORKERS ?= 2

.PHONY: setup demo up test lint format bench clean

setup: $(STAMP)

$(STAMP): requirements.txt requirements-dev.txt requirements-cli.txt pyproject.toml infra/requirements-checkov.txt scripts/bootstrap.sh
	scripts/bootstrap.sh
	touch $@

demo: setup
	$(PY) -m local.demo

up: setup
	$(PY) -m local.up

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

format: setup
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

test: lint
	$(PY) -m pytest -n $(PYTEST_WORKERS) --dist loadfile

bench: setup
	$(PY) -m benchmarks

clean:
	rm -rf .data .pytest_cache .mypy_cache .ruff_cache
