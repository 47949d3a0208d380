# Shared helpers: expand the experiment grid of the config.
import shlex
import sys

PY = sys.executable  # the interpreter running snakemake (the project venv), not whatever `python` is on PATH

OUT = config.get("results", "results")


def runs_of(exp):
    spec = config["experiments"][exp]
    return [(m, s) for m in spec["methods"] for s in config["seeds"]]


def metrics_of(exp):
    return [f"{OUT}/runs/{exp}/{m}/seed{s}/metrics.csv" for m, s in runs_of(exp)]


def set_args(exp, method):
    """--set arguments of one method of one experiment (values quoted for the shell)."""
    sets = {**config.get("common_sets", {}), **(config["experiments"][exp]["methods"][method] or {})}
    return " ".join(f"--set {shlex.quote(f'{k}={v}')}" for k, v in sets.items())


def all_tables():
    return [f"{OUT}/tables/{exp}.csv" for exp in config["experiments"]]


def all_figures():
    return [f"{OUT}/figures/convergence_{exp}.png" for exp in config["experiments"]]


wildcard_constraints:
    exp=r"[A-Za-z0-9_\-]+",
    method=r"[A-Za-z0-9_.\-]+",
    seed=r"\d+",
