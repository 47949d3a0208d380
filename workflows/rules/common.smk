# Shared helpers: validate the tier, expand grids into experiments, expand the experiment grid.
import shlex
import sys

from snakemake.utils import validate

PY = sys.executable  # the interpreter running snakemake (the project venv), not whatever `python` is on PATH

validate(config, "../schemas/config.schema.yaml")

OUT = config.get("results", "results")


def expand_grids(cfg):
    """grids: {name: {base, models, tasks: {task: {metric, target, sets}}, methods}} -> experiments."""
    out = {}
    for gname, g in (cfg.get("grids") or {}).items():
        for model in g["models"]:
            for task, t in g["tasks"].items():
                name = f"{gname}-{model}-{task}"
                sets = {"task.name": task, "task.model": model, **(g.get("model_sets", {}).get(model) or {}),
                        **(t.get("sets") or {})}
                out[name] = {"title": f"{model} on {task}", "base": g["base"], "metric": t["metric"],
                             "target": t["target"], "sets": sets, "methods": g["methods"],
                             "gpu": g.get("gpu", 0), "threads": g.get("threads", 1),
                             "paper": {"model": model, "task": task}}
    return out


def expand_lr_grids(experiments):
    """lr_grid: {method: [lr, ...]} -> methods "<method>@<lr>", listed in spec["tuned"]: each also runs at the
    tuning seed on the dev split, and the table picks each method's lr from those runs alone."""
    for spec in experiments.values():
        for m, lrs in (spec.pop("lr_grid", None) or {}).items():
            base = spec["methods"].pop(m) or {}
            for lr in lrs:
                spec["methods"][f"{m}@{lr:g}"] = {**base, "federation.lr": lr}
                spec.setdefault("tuned", []).append(f"{m}@{lr:g}")
    return experiments


config["experiments"] = expand_lr_grids({**(config.get("experiments") or {}), **expand_grids(config)})
EXPERIMENTS = config["experiments"]
TUNING_SEED = config.get("tuning_seed", 100)
for _exp, _spec in EXPERIMENTS.items():
    if _spec.get("tuned") and TUNING_SEED in _spec.get("seeds", config["seeds"]):
        raise ValueError(f"experiment {_exp}: tuning_seed {TUNING_SEED} is also a reported seed; "
                         "choose another tuning_seed (the step size must not be chosen on a reported run)")


def runs_of(exp):
    spec = EXPERIMENTS[exp]
    runs = [(m, s) for m in spec["methods"] for s in spec.get("seeds", config["seeds"])]
    return runs + [(m, TUNING_SEED) for m in spec.get("tuned", [])]


def is_tuning(exp, method, seed):
    return int(seed) == TUNING_SEED and method in EXPERIMENTS[exp].get("tuned", [])


def tuning_arg(exp):
    """--tuning-seed for the table and figure scripts of an experiment with lr grids."""
    return f"--tuning-seed {TUNING_SEED}" if EXPERIMENTS[exp].get("tuned") else ""


def metrics_of(exp):
    return [f"{OUT}/runs/{exp}/{m}/seed{s}/metrics.csv" for m, s in runs_of(exp)]


def yaml_value(v):
    """A --set value that YAML reads back as the same value (inf is .inf in YAML)."""
    if isinstance(v, float) and v in (float("inf"), float("-inf")):
        return ".inf" if v > 0 else "-.inf"
    return v


def set_args(exp, method, seed=None):
    """--set arguments of one method of one experiment (values quoted for the shell); a tuning run also
    evaluates on the dev split, with the experiment's tuning_sets."""
    spec = EXPERIMENTS[exp]
    sets = {**config.get("common_sets", {}), **(spec.get("sets") or {}), **(spec["methods"][method] or {})}
    if seed is not None and is_tuning(exp, method, seed):
        sets.update({"run.eval_split": "dev", **(spec.get("tuning_sets") or {})})
    return " ".join(f"--set {shlex.quote(f'{k}={yaml_value(v)}')}" for k, v in sets.items())


def all_tables():
    tables = [f"{OUT}/tables/{exp}.csv" for exp in EXPERIMENTS]
    if config.get("paper_results"):
        tables.append(f"{OUT}/paper_results/side_by_side.csv")
    return tables


def all_figures():
    figs = [f"{OUT}/figures/convergence_{exp}.png" for exp in EXPERIMENTS]
    figs += [f"{OUT}/figures/sweep_{name}.png" for name in config.get("sweeps") or {}]
    figs += [f"{OUT}/figures/curvature_histogram_{exp}.png" for exp in config.get("histograms") or {}]
    if config.get("zeta_rounds"):
        figs.append(f"{OUT}/figures/zeta.png")
    return figs


wildcard_constraints:
    exp=r"[A-Za-z0-9_.\-]+",
    method=r"[A-Za-z0-9_.@\-]+",
    seed=r"\d+",
    sweep=r"[A-Za-z0-9_.\-]+",
