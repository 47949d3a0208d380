# The two commands of the README.  Both set up the virtual environment first (once; again when
# pyproject.toml changes), so they work on a fresh machine.
#   make run    the main job: the Snakemake workflow on the embedded CPU default (tables + figures)
#   make test   the test suite (offline; TEST_WORKERS=2 pytest processes)
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
CORES  ?= all
# make test's pytest worker processes (pytest-xdist; CI has 2 cores); TEST_WORKERS=0 runs the suite in one process
TEST_WORKERS ?= 2
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1


.PHONY: setup run test test-fast check-pages report clean-results

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml requirements-offline.txt Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e ".[test]"
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps -r requirements-offline.txt
	touch $@

run: setup
	$(BIN)/snakemake --cores $(CORES)

test: setup
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist worksteal

test-fast: setup  # everything but the end-to-end tests marked slow
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist worksteal -m "not slow"

# The committed pages against today's code, without rerunning a tier: every table page's text re-rendered from its
# tables, the lm page's runs rerun for their first rounds (one per code version and method), and the curvature
# page's quickest evaluation of each problem and method rerun (about 15 CPU-minutes; docs/numerics.md)
check-pages: setup
	$(BIN)/python workflows/scripts/rerender_pages.py --check
	$(BIN)/python workflows/scripts/verify_runs.py docs/results/lm
	$(BIN)/python workflows/scripts/verify_runs.py docs/results/curvature --tier workflows/config/curvature.yaml

report: setup
	$(BIN)/snakemake --cores $(CORES) --report results/report.html

clean-results:
	rm -rf results
