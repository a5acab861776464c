# The two commands: `make demo` and `make test`. Each creates .venv when it is missing.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint bench bench-queue chaos clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m resile.demo

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy --strict src

test: lint
	$(BIN)/pytest -q

bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -r benchmarks/requirements.txt
	$(BIN)/python benchmarks/retry_overhead.py
	$(MAKE) bench-queue

# The queue benchmarks: each peer in its own venv under .bench/venvs (made on first run).
bench-queue: $(STAMP)
	$(BIN)/python benchmarks/queue_sqlite.py
	$(BIN)/python benchmarks/queue_redis.py

# The chaos suite's long form: every fault mode on every backend it can start (benchmarks/chaos.py).
# CHAOS_ARGS passes options, e.g. make chaos CHAOS_ARGS="--backend sqlite --seconds 60 --seed 7".
chaos: $(STAMP)
	$(BIN)/python benchmarks/chaos.py $(CHAOS_ARGS)

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache build dist
