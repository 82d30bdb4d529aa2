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
	$(BIN)/menas space show mobilenet3-mt --input-size 32 --num-classes 10 --in-chans 1
	$(BIN)/menas sample --space mobilenet3-mt --macs 5M:20M --params-max 2M --input-size 32 --in-chans 1 --num-classes 10 -n 3 --seed 0
	$(BIN)/menas inspect "$$($(BIN)/menas sample --space mobilenet3-mt --macs 5M:20M --params-max 2M --input-size 32 --in-chans 1 --num-classes 10 -n 1 --seed 0 | cut -d' ' -f1)" --input-size 32 --in-chans 1 --num-classes 10

test: $(STAMP) dataset
	$(BIN)/ruff check src tests bench
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

format: $(STAMP)
	$(BIN)/ruff format src tests bench
	$(BIN)/ruff check --fix src tests bench

bench: $(STAMP)
	$(BIN)/python bench/bench_cost.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
