# Two commands on a fresh machine:
#   make run    create .venv, install, run the default pipeline (config.yaml)
#   make test   create .venv, install with test extras, run the tests
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CORES ?= all
TORCH_CPU := torch==2.13.0

.PHONY: run test venv install lint report bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# The CPU torch wheel lies on disk on the project machines; take it first so the
# open range in pyproject.toml does not pull a multi-GB CUDA build. Elsewhere
# this step may fail harmlessly and pip resolves torch from pyproject.toml.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet $(TORCH_CPU) || echo "note: $(TORCH_CPU) unavailable; pip will resolve torch"
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

venv install: $(VENV)/.installed

run: $(VENV)/.installed
	$(BIN)/snakemake --cores $(CORES) --configfile config.yaml

report: $(VENV)/.installed
	$(BIN)/snakemake --cores $(CORES) --configfile config.yaml --report report.html

test: $(VENV)/.installed
	$(BIN)/pytest

lint: $(VENV)/.installed
	$(BIN)/ruff check src tests benchmarks workflow/scripts
	$(BIN)/snakemake --lint --configfile config.yaml
	$(BIN)/snakefmt --check Snakefile workflow/rules

bench: $(VENV)/.installed
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf results logs .snakemake report.html
