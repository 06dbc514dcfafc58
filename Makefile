# Two commands on a fresh machine:
#   make run    create .venv, install, run the default pipeline (config.yaml)
#   make test   create .venv, install with test extras, run the tests
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CORES ?= all
TORCH_CPU := torch==2.13.0

# `snakemake --profile slurm` looks a bare profile name up in the working
# directory, in ~/.config/snakemake ($XDG_CONFIG_HOME) and in /etc/xdg/snakemake.
SNAKEMAKE_CONFIG := $(or $(XDG_CONFIG_HOME),$(HOME)/.config)/snakemake

.PHONY: run test venv install lint report bench clean profile slurm-packages

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

test: $(VENV)/.installed slurm-packages
	$(BIN)/pytest

# The SLURM test (tests/test_slurm.py) runs a one-node cluster from Debian's
# packages; install them where missing. Without apt or root this fails
# harmlessly and that test is skipped, saying why.
slurm-packages:
	@bash tests/slurm/cluster.sh install || echo "note: SLURM packages not installed; the SLURM test will be skipped"

# Install profiles/slurm (the site settings) as the profile named `slurm`. An
# installed copy you have edited is kept; FORCE=1 replaces it.
profile:
	@mkdir -p $(SNAKEMAKE_CONFIG)/slurm
	@if [ -f $(SNAKEMAKE_CONFIG)/slurm/config.yaml ] && [ -z "$(FORCE)" ] && \
	    ! cmp -s profiles/slurm/config.yaml $(SNAKEMAKE_CONFIG)/slurm/config.yaml; then \
	    echo "kept your edited $(SNAKEMAKE_CONFIG)/slurm/config.yaml (make profile FORCE=1 replaces it)"; \
	else \
	    cp profiles/slurm/config.yaml $(SNAKEMAKE_CONFIG)/slurm/config.yaml && \
	    echo "installed $(SNAKEMAKE_CONFIG)/slurm: run 'snakemake --profile slurm' from the repository root"; \
	fi

lint: $(VENV)/.installed
	$(BIN)/ruff check src tests benchmarks workflow/scripts
	$(BIN)/snakemake --lint --configfile config.yaml
	$(BIN)/snakefmt --check Snakefile workflow/rules

bench: $(VENV)/.installed
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf results logs .snakemake report.html
