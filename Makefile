# Two entry points a new user needs: `make quick` (the CPU quick grid) and `make test`.
# `make quick` installs only what the quick run needs (no pytest, no Ray);
# `make test` adds the dev and Ray extras to the same venv.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
QUICK_STAMP := $(VENV)/.installed-quick
TEST_STAMP := $(VENV)/.installed-test

.PHONY: quick test test-all lint install install-quick clean

$(PY):
	$(PYTHON) -m venv $(VENV)

# Reinstall when the dependency list changes.
$(QUICK_STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e .
	touch $(QUICK_STAMP)

$(TEST_STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,ray]'
	touch $(TEST_STAMP) $(QUICK_STAMP)

install-quick: $(QUICK_STAMP)

install: $(TEST_STAMP)

quick: $(QUICK_STAMP)
	$(PY) benchmark.py --grid grids/quick.yaml --device cpu

test: $(TEST_STAMP)
	$(PY) -m pytest -q

lint: $(TEST_STAMP)
	$(PY) -m ruff check .

test-all: $(TEST_STAMP)
	$(PY) -m pytest -q -m ''

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
