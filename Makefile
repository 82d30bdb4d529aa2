# Set-up and everyday commands. `make demo` and `make test` work on a fresh machine: they create .venv and
# install the Fashion-MNIST dataset package when apt is available. `make demo` installs menas alone (what every
# README command needs); `make test` adds the dev extra (Ray, ONNX, fvcore, pytest, ruff) and Debian's chromium
# (the browser tests). Both install with constraints.txt, the versions the tests ran with (`make constraints`
# rewrites it from .venv).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP_INSTALL := $(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt
BASE_STAMP := $(VENV)/.installed-base
DEV_STAMP := $(VENV)/.installed-dev
PYTEST := $(BIN)/python -m pytest -q --durations=15

.PHONY: demo test test-all test-slow lint format bench dataset browser constraints clean docs

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(BASE_STAMP): pyproject.toml constraints.txt | $(BIN)/python
	$(PIP_INSTALL) -e .
	touch $(BASE_STAMP)

$(DEV_STAMP): pyproject.toml constraints.txt | $(BIN)/python
	$(PIP_INSTALL) -e '.[dev]'
	touch $(DEV_STAMP) $(BASE_STAMP)

dataset:
	@bash scripts/install-fashion-mnist.sh

# headless Chromium for tests/test_browser.py (skipped without it)
browser:
	@bash scripts/install-chromium.sh

demo: $(BASE_STAMP) dataset
	rm -rf runs/demo
	$(BIN)/menas search --config configs/demo.yaml --out runs/demo
	$(BIN)/menas report runs/demo
	@echo "The scores above are 2-to-4-epoch proxies (rungs) on 3,000 images, to rank networks. Retrained 5 epochs on"
	@echo "all 58,800 training images (.venv/bin/menas retrain runs/demo --epochs 5 --out runs/demo/retrain), the"
	@echo "demo's best network tested 88.1% and 88.1% top-1 on Fashion-MNIST's test split (2 seeds; BENCHMARKS.md,"
	@echo "'Demo search'). The report: runs/demo/report/report.html; live, while a search runs: menas dashboard RUN"

# the everyday suite: everything but the tests marked slow (CI runs those too: .ci/run)
test: $(DEV_STAMP) dataset browser
	$(BIN)/ruff check src tests bench
	$(PYTEST) -m "not slow"

test-slow: $(DEV_STAMP) dataset
	$(PYTEST) -m slow

test-all: $(DEV_STAMP) dataset browser
	$(BIN)/ruff check src tests bench
	$(PYTEST)

lint: $(DEV_STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

format: $(DEV_STAMP)
	$(BIN)/ruff format src tests bench
	$(BIN)/ruff check --fix src tests bench

bench: $(DEV_STAMP) dataset
	$(BIN)/python bench/bench_cost.py
	$(BIN)/python bench/bench_train.py
	$(BIN)/python bench/bench_lottery.py

# the configuration reference, generated from the config dataclasses (tests/test_docs.py checks it is current)
docs: $(BASE_STAMP)
	$(BIN)/python -m menas.config_doc > docs/configuration-reference.md.tmp
	mv docs/configuration-reference.md.tmp docs/configuration-reference.md

constraints: $(DEV_STAMP)
	@echo "# Versions the tests ran with (pip freeze of the dev install, menas excluded): make constraints" > constraints.txt
	$(BIN)/python -m pip freeze --exclude-editable >> constraints.txt

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
