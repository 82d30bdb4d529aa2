# Set-up and everyday commands. `make demo` and `make test` work on a fresh machine: they create .venv,
# install menas with its dev extras, and install the Fashion-MNIST dataset package when apt is available.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint format bench dataset clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

dataset:
	@bash scripts/install-fashion-mnist.sh

demo: $(STAMP) dataset
	rm -rf runs/demo
	$(BIN)/menas search --config configs/demo.yaml --out runs/demo
	$(BIN)/menas report runs/demo

test: $(STAMP) dataset
	$(BIN)/ruff check src tests bench
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

format: $(STAMP)
	$(BIN)/ruff format src tests bench
	$(BIN)/ruff check --fix src tests bench

bench: $(STAMP) dataset
	$(BIN)/python bench/bench_cost.py
	$(BIN)/python bench/bench_train.py
	$(BIN)/python bench/bench_lottery.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
