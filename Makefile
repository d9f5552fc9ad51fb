# Two commands for a new user: `make demo` and `make test`. Both install into .venv when needed.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo test bench lint clean

install: $(STAMP)

$(STAMP): requirements.txt requirements-tensorboard.txt requirements-dask.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet -r requirements-tensorboard.txt
	$(PY) -m pip install --quiet -r requirements-dask.txt
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m tools.demo

test: $(STAMP)
	$(PY) -m pytest -q tests

bench: $(STAMP)
	$(PY) -m tools.bench.loader
	$(PY) -m tools.bench.models

clean:
	rm -rf demo_data demo_runs bench_data .pytest_cache
