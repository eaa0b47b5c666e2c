# mdpot: the README's two commands are `make run` and `make test`; each sets everything up first.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
# pytest-xdist workers for `make test` (whole files per worker; `make test TEST_WORKERS=0` runs in one process)
TEST_WORKERS ?= 2
PIP    := $(PY) -m pip --disable-pip-version-check -q
STAMP  := $(VENV)/.mdpot-installed

.PHONY: setup plugin run test bench clean

setup: $(STAMP)

# Rebuilds only when torch, LAMMPS, MPICH or the plugin sources (mdpot/lammps/src) change (recorded in
# mdpot/lammps/lib/mdpotplugin.json). `lmp` would build it on first use too; here it is built up front.
plugin: setup
	$(PY) -m mdpot.lammps.plugin

# Re-runs only when the dependency pins or the package metadata change; torch goes first, then every later
# install is constrained to it so nothing can swap in a CUDA build. cmake and ninja come from PyPI (mdpot's
# dependencies); the plugin build needs only a C++ compiler, installed with apt-get if missing.
$(STAMP): pyproject.toml constraints.txt
	command -v g++ >/dev/null || { apt-get update -q && apt-get install -y -q g++; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install torch==2.13.0
	$(PIP) install -c constraints.txt -e ".[test]"
	touch $(STAMP)

run: plugin
	$(PY) -m mdpot.cli demo

test: plugin
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile --durations=30 tests

bench: setup
	$(PY) scripts/bench_ase.py

clean:
	rm -rf $(VENV) build dist mdpot/lammps/lib
