# Two entry points a new user needs: `make quick` (the CPU quick grid) and `make test`.
# `make quick` installs only what the quick run needs (no pytest, no Ray);
# `make test` adds the dev and Ray extras to the same venv.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
QUICK_STAMP := $(VENV)/.installed-quick
TEST_STAMP := $(VENV)/.installed-test

.PHONY: quick test test-all lint install install-quick install-min test-min clean

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

# The GPU machine's Python reproduced on a CPU: torch 2.11.0, torchvision 0.26.0, no fvcore, no Ray
# (scripts/minimal_env.sh; reused while its stamp matches, so MIN_VENV may live outside the tree, as
# in CI). The harness runs from the tree, uninstalled, as it does there: the quick grid, the timing,
# profile and GPU-logic tests, and the GPU script's CPU dry run (docs/gpu.md).
MIN_VENV ?= .venv-min
MIN_PY := $(MIN_VENV)/bin/python
MIN_TESTS := tests/test_timing.py tests/test_kineto.py tests/test_profile.py tests/test_measure.py \
	tests/test_recipe_device.py tests/test_paired.py tests/test_complexity.py tests/test_layers.py \
	tests/test_gpu_script.py

install-min:
	bash scripts/minimal_env.sh $(MIN_VENV)

test-min: install-min
	out=$$(mktemp -d) && rc=0 && $(MIN_PY) benchmark.py --grid grids/quick.yaml --device cpu \
		--out $$out/quick.csv --no-progress --no-report || rc=$$?; rm -rf $$out; exit $$rc
	$(MIN_PY) -m pytest -q -p no:cacheprovider $(MIN_TESTS)
	$(MIN_PY) -m pytest -q -p no:cacheprovider -m slow tests/test_gpu_script.py

clean:
	rm -rf $(VENV) $(MIN_VENV) *.egg-info .pytest_cache
