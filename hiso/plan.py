"""A workflow tier as data: its experiments, every run's `--set` assignments, and the step-size choice.

The Snakemake rules (workflows/rules/*.smk) and the tests read the same functions, so a test can load the
config of every planned run of every tier without running Snakemake.

Two step-size protocols:
- ``lr_grid: {method: [lr, ...]}`` (CPU tiers): ``<method>@<lr>`` runs at every reported seed and at the tuning
  seed on the dev split; the table marks each family's best lr from the tuning run.
- ``tune: {method: [lr, ...]}`` (GPU tiers): ``<method>@<lr>`` runs only at the tuning seed on the dev split; a
  ``choose_lr`` job picks the best (hiso.scan.choose_lr) into ``tuning/<exp>/<method>.json``, and the method's
  reported seeds run at that step size.
- ``scan: {method: [lr, ...]}``: like ``tune``, but one job scans (hiso/scan.py): it stops past the best and
  extends the grid past an edge where the best lies, so the tried points are known only as it runs.  ``lr_from: <method>`` in a method's sets runs it at another method's
  chosen step size (the labelled equal-lr rows).

``rehearsal: true`` runs the same DAG on CPU: runs load hub models and data sets from a fixture mirror
(hiso/tasks/fixtures.py), ``rehearsal_sets`` apply last to every run, and each run takes one CPU core.  ``only: [pattern, ...]`` keeps the
experiments whose names match.
"""
from __future__ import annotations

import fnmatch
import json
import re
from pathlib import Path

# method keys that are not config keys: lr_from (another method's chosen step size), seeds (the method's own
# reported seeds), label and color (how tables and figures name and draw it; figures/style.py)
META_KEYS = ("lr_from", "seeds", "rounding", "label", "color")


def expand_grids(cfg: dict) -> dict:
    """grids: {name: {base, models, tasks: {task: {metric, target, sets}}, methods, tune, resources}} ->
    experiments named <grid>-<model>-<task>."""
    out = {}
    for gname, g in (cfg.get("grids") or {}).items():
        for model in g["models"]:
            for task, t in g["tasks"].items():
                name = f"{gname}-{model}-{task}"
                msets = g.get("model_sets", {}).get(model) or {}
                sets = {"task.name": task, "task.model": model, **(g.get("sets") or {}), **msets,
                        **(t.get("sets") or {}), **((g.get("cell_sets") or {}).get(f"{model}:{task}") or {})}
                spec = {"title": f"{model} on {task}", "base": g["base"], "metric": t["metric"],
                        "target": t["target"], "sets": sets, "methods": dict(g["methods"]),
                        "gpu": g.get("gpu", 0), "threads": g.get("threads", 1),
                        "paper": {"model": model, "task": task},
                        "resources": (g.get("resources") or {}).get(model, {})}
                for key in ("tuning_sets", "priority", "seeds"):
                    if key in g:
                        spec[key] = g[key]
                if g.get("tune"):
                    base_lr = sets.get("federation.lr")
                    spec["tune"] = {m: [_scaled(f, base_lr) for f in factors] for m, factors in g["tune"].items()}
                out[name] = spec
    return out


def _scaled(factor: float, base_lr) -> float:
    """A grid point: factor x the model's federation.lr (3 significant digits, so names stay short)."""
    if base_lr is None:
        raise ValueError("grid tune factors need federation.lr in the grid's model_sets (or sets)")
    return float(f"{factor * base_lr:.3g}")


def expand_lr_grids(experiments: dict) -> dict:
    """lr_grid -> methods "<method>@<lr>" listed in spec["tuned"]; tune -> tuning-only methods listed in
    spec["tuning_only"], with spec["choices"][method] = its grid's method names."""
    for spec in experiments.values():
        for m, lrs in (spec.pop("lr_grid", None) or {}).items():
            base = spec["methods"].pop(m) or {}
            for lr in lrs:
                spec["methods"][f"{m}@{lr:g}"] = {**base, "federation.lr": lr}
                spec.setdefault("tuned", []).append(f"{m}@{lr:g}")
        for m, lrs in (spec.pop("tune", None) or {}).items():
            if m not in spec["methods"]:
                raise ValueError(f"tune names method {m!r}, which the experiment does not run")
            base = {k: v for k, v in (spec["methods"][m] or {}).items() if k not in META_KEYS}
            names = []
            for lr in lrs:
                spec["methods"][f"{m}@{lr:g}"] = {**base, "federation.lr": lr}
                names.append(f"{m}@{lr:g}")
            spec.setdefault("tuning_only", []).extend(names)
            spec.setdefault("choices", {})[m] = names
        for m, lrs in (spec.pop("scan", None) or {}).items():  # hiso/scan.py: tried points found while scanning
            if m not in spec["methods"]:
                raise ValueError(f"scan names method {m!r}, which the experiment does not run")
            if not lrs or any(not (isinstance(lr, (int, float)) and lr > 0) for lr in lrs):
                raise ValueError(f"scan of {m}: expected a list of positive step sizes, got {lrs!r}")
            spec.setdefault("scans", {})[m] = sorted(float(lr) for lr in lrs)
            spec.setdefault("choices", {})[m] = []
        for m, sets in spec["methods"].items():
            src = (sets or {}).get("lr_from")
            if src is not None and src not in spec.get("choices", {}):
                raise ValueError(f"method {m}: lr_from {src!r} is not a tuned method of this experiment")
    return experiments


def add_twins(config: dict, spec: dict) -> None:
    """rounding: true (every reported seed) or a list of seeds -> a rounding twin "<method>+ulp" of every reported
    method on those seeds: its sets plus run.init_ulps 1, at the same step size (a tuned method's twin reads its
    choice: lr_from).  A method's own `rounding:` (true, false or seeds of its own) replaces the experiment's for it,
    so that a costly method can be twinned on fewer seeds.  spec["twins"]: twin -> method; spec["twin_seeds"]:
    twin -> its seeds (hiso/noise.py)."""
    from .noise import TWIN
    from .noise import twin_seeds as parse_twin_seeds
    rounding = spec.pop("rounding", None)
    seeds = spec.get("seeds", config["seeds"])  # a twin runs on these seeds; each must be a seed of its method
    default = parse_twin_seeds(rounding, seeds, "rounding", "reported seeds of the experiment")
    only = set(spec.get("tuning_only", []))
    for method in [m for m in spec["methods"] if m not in only]:
        entry = spec["methods"][method] or {}
        own = method_seeds(config, spec, method)
        if "rounding" in entry:
            twin_seeds = parse_twin_seeds(entry["rounding"], own, f"method {method}: rounding",
                                          f"reported seeds of method {method}")
        else:
            twin_seeds = default
            if twin_seeds and not set(twin_seeds) <= set(own):
                raise ValueError(f"rounding seeds {twin_seeds} must be reported seeds of method {method} ({own})")
        if not twin_seeds:
            continue
        sets = {k: v for k, v in entry.items() if k not in META_KEYS}
        source = lr_source(spec, method)
        twin = {**sets, "run.init_ulps": 1, **({"lr_from": source} if source else {})}
        spec["methods"][f"{method}{TWIN}"] = twin
        spec.setdefault("twins", {})[f"{method}{TWIN}"] = method
        spec.setdefault("twin_seeds", {})[f"{method}{TWIN}"] = twin_seeds


def kept(config: dict, name: str) -> bool:
    """Whether the tier's `only` patterns (shell patterns, fnmatch) keep `name`: an experiment, a study's problem or
    a perf job.  Every name is kept when there are none."""
    return not config.get("only") or any(fnmatch.fnmatchcase(name, p) for p in config["only"])


def method_kept(config: dict, method: str) -> bool:
    """Whether the tier's `methods` patterns (fnmatch, on the names a tier gives its methods) keep `method`; every
    method is kept when there are none."""
    return not config.get("methods") or any(fnmatch.fnmatchcase(method, p) for p in config["methods"])


def slice_methods(config: dict, exps: dict) -> dict:
    """`methods: [pattern, ...]`: each experiment keeps the methods that match, with their step-size grids and
    scans; an experiment left with none is dropped.  Before grids and twins are expanded, so a kept method keeps
    its tuning and its rounding twin."""
    if not config.get("methods"):
        return exps
    out = {}
    for name, spec in exps.items():
        methods = {m: s for m, s in spec["methods"].items() if method_kept(config, m)}
        if not methods:
            continue
        for m, sets in methods.items():
            src = (sets or {}).get("lr_from")
            if src is not None and src not in methods:
                raise ValueError(f"methods: {config['methods']} keeps {m} of experiment {name} but not {src}, "
                                 "whose step size it runs at (lr_from)")
        out[name] = {**spec, "methods": methods,
                     **{k: {m: v for m, v in spec[k].items() if m in methods}
                        for k in ("lr_grid", "tune", "scan") if spec.get(k)}}
    if not out:
        raise ValueError(f"methods: {config['methods']} matches no method of the tier")
    return out


def experiments(config: dict) -> dict:
    """Every experiment of a tier (explicit ones and expanded grids), sliced to its `methods`, lr grids expanded."""
    explicit = {name: {**spec, "methods": dict(spec["methods"])}  # YAML anchors share dicts: expand copies
                for name, spec in (config.get("experiments") or {}).items()}
    exps = expand_lr_grids(slice_methods(config, {**explicit, **expand_grids(config)}))
    for name, spec in exps.items():
        for method in spec["methods"]:
            _check_name(f"experiment {name}: method", method, METHOD_NAME)
        add_twins(config, spec)
    if config.get("only"):
        exps = {n: s for n, s in exps.items() if kept(config, n)}
        if not exps and not config.get("study") and not config.get("perf"):  # a study's `only` selects its problems,
            # the perf tier's its jobs (workflows/rules/perf.smk)
            raise ValueError(f"only: {config['only']} matches no experiment of the tier")
    if config.get("rehearsal"):  # CPU runs: one core each, no GPU slot
        for spec in exps.values():
            spec.update(threads=1, gpu=0)
    tuning_seed = config.get("tuning_seed", 100)
    for name, spec in exps.items():
        _check_name("experiment", name, EXPERIMENT_NAME)
        reported = {s for m in spec["methods"] for s in method_seeds(config, spec, m)}
        if (spec.get("tuned") or spec.get("tuning_only")) and tuning_seed in reported:
            raise ValueError(f"experiment {name}: tuning_seed {tuning_seed} is also a reported seed; choose another "
                             "tuning_seed (the step size must not be chosen on a reported run)")
        ref = spec.get("reference")
        if ref is not None and ref not in {m.split("@")[0] for m in spec["methods"]}:
            raise ValueError(f"experiment {name}: reference {ref!r} is not one of its methods "
                             f"({', '.join(spec['methods'])}): the table compares every method with it")
        scan_seeds = spec.get("scan_seeds")
        if scan_seeds is not None and (not _seed_list(scan_seeds) or set(scan_seeds) & reported):
            raise ValueError(f"experiment {name}: scan_seeds {scan_seeds!r} must be a list of seeds >= 0 that are not "
                             f"reported seeds ({sorted(reported)}): the step size must not be chosen on a reported run")
        if spec.get("scan_criterion") is not None and scan_seeds is None:
            raise ValueError(f"experiment {name}: scan_criterion {spec['scan_criterion']!r} scores the full-grid "
                             "protocol's points; it needs scan_seeds (a scan without them chooses by the target)")
    return exps


# what the run rule's wildcards match (workflows/rules/common.smk): a name outside them would plan a job no rule
# can make (Snakemake's MissingInputException), so it is refused here, naming it
EXPERIMENT_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*")
METHOD_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.@\-]*")


def _check_name(what: str, name, pattern) -> None:
    if not isinstance(name, str) or not pattern.fullmatch(name):
        raise ValueError(f"{what} {name!r} must be one folder name of letters, digits and {'._@-' if '@' in pattern.pattern else '._-'} "
                         "(not starting with . or -): it names a folder under results/runs/")


def runs_of(config: dict, spec: dict) -> list[tuple[str, int]]:
    """(method, seed) of every run of one experiment: reported seeds, then tuning runs."""
    tuning_seed = config.get("tuning_seed", 100)
    only = set(spec.get("tuning_only", []))
    twins = spec.get("twins", {})
    runs = [(m, s) for m in spec["methods"] if m not in only
            for s in (spec["twin_seeds"][m] if m in twins else method_seeds(config, spec, m))]
    return runs + [(m, tuning_seed) for m in [*spec.get("tuned", []), *spec.get("tuning_only", [])]]


def _seed_list(value) -> bool:
    """A non-empty list of seeds (integers >= 0, not booleans)."""
    return isinstance(value, list) and bool(value) and all(
        isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in value)


def method_seeds(config: dict, spec: dict, method: str) -> list[int]:
    """A method's reported seeds: its own `seeds:` key, else the experiment's, else the tier's."""
    own = (spec["methods"][method] or {}).get("seeds")
    if own is not None and not _seed_list(own):
        raise ValueError(f"method {method}: seeds {own!r} must be a non-empty list of seeds >= 0")
    return list(own) if own is not None else list(spec.get("seeds", config["seeds"]))


def is_tuning(config: dict, spec: dict, method: str, seed: int) -> bool:
    return int(seed) == config.get("tuning_seed", 100) and (
        method in spec.get("tuned", []) or method in spec.get("tuning_only", []))


def lr_source(spec: dict, method: str) -> str | None:
    """The tuned method whose chosen step size this method runs at (itself, or its lr_from), else None (also for a
    scan's tried point `<method>@<lr>`, which runs at its own step size)."""
    if method in spec.get("choices", {}):
        return method
    return (spec["methods"].get(method) or {}).get("lr_from")


def run_sets(config: dict, spec: dict, method: str, seed: int | None = None, tuning: bool = False) -> dict:
    """The dotted config assignments of one run (without the chosen lr, which a file supplies); `tuning`: of a
    tuning run (as a run at the tuning seed of a tuned method is)."""
    sets = {**config.get("common_sets", {}), **(spec.get("sets") or {}),
            **{k: v for k, v in (spec["methods"][method] or {}).items() if k not in META_KEYS}}
    if tuning or (seed is not None and is_tuning(config, spec, method, seed)):
        sets.update({"run.eval_split": "dev", "run.also_dev": False, **(spec.get("tuning_sets") or {})})
    if config.get("rehearsal"):
        sets.update(config.get("rehearsal_sets") or {})
    return sets


def hub_mirror(config: dict, out: str | Path) -> str | None:
    """The hub mirror the runs load from: the fixture mirror in a rehearsal, else the tier's hub_mirror."""
    if config.get("rehearsal"):
        return f"{out}/fixtures"
    return config.get("hub_mirror")


def assignment(key: str, value) -> str:
    """One `--set KEY=VALUE` as the run rule passes it: YAML reads the value back as the same value (inf is
    .inf in YAML)."""
    if isinstance(value, float) and value in (float("inf"), float("-inf")):
        value = ".inf" if value > 0 else "-.inf"
    return f"{key}={value}"


def run_configs(config: dict, exps: dict, root: str | Path = "."):
    """(experiment, method, seed, Config) of every planned run, loaded from the assignments the run rule
    passes; a reported run of a tuned method gets a placeholder lr (the value choose_lr will write).
    A ConfigError names the run."""
    from .config import ConfigError, load_config
    for exp, spec in exps.items():
        for method, seed in runs_of(config, spec):
            sets = run_sets(config, spec, method, seed)
            if lr_source(spec, method) and not is_tuning(config, spec, method, seed):
                sets["federation.lr"] = 1.0
            overrides = [assignment(k, v) for k, v in sets.items()] + [f"seed={seed}"]
            try:
                yield exp, method, seed, load_config(Path(root) / spec["base"], overrides)
            except ConfigError as e:
                raise ConfigError(f"experiment {exp}, method {method}, seed {seed}: {e}") from None
        for method, lrs in spec.get("scans", {}).items():  # a scan's first point, as scan_command loads it
            overrides = scan_overrides(config, spec, method) + [f"federation.lr={lrs[-1]!r}"]
            try:
                yield exp, f"{method}@{lrs[-1]:g}", config.get("tuning_seed", 100), load_config(
                    Path(root) / spec["base"], overrides)
            except ConfigError as e:
                raise ConfigError(f"experiment {exp}, scan of {method}: {e}") from None


def scan_overrides(config: dict, spec: dict, method: str) -> list[str]:
    """The --set assignments of a scanned method's tuning runs (its reported sets and the tuning_sets)."""
    sets = run_sets(config, spec, method, tuning=True)
    return [assignment(k, v) for k, v in sets.items()]


MAX_RUNS = 10_000  # one Snakemake DAG of more jobs takes tens of minutes to plan: such a tier is refused at once


def check_runs(config: dict, exps: dict, root: str | Path = ".", out: str | Path | None = None) -> int:
    """Load the config of every planned run so that a bad key, value or task name fails at plan time, naming
    the run (ValueError); returns the number of runs checked.  A tier of more than `max_runs` runs (default
    MAX_RUNS) is refused before any is loaded; past a few seconds, progress goes to stderr.  With `out` (the tier's
    results folder), the same pass refuses run folders that hold runs of another config (_other_config): the run
    rule never replaces them unless the tier is told to (`--config replace_different=True`)."""
    import sys
    import time

    from .config import ConfigError
    total = sum(len(runs_of(config, spec)) for spec in exps.values())
    limit = config.get("max_runs", MAX_RUNS)
    if total > limit:
        raise ValueError(f"the tier plans {total:,} runs, more than max_runs ({limit:,}): one Snakemake DAG that large "
                         "takes tens of minutes to plan. Plan it in slices (--config 'only=[pattern]'), or raise "
                         "max_runs in the tier")
    start, shown, n, found = time.monotonic(), time.monotonic(), 0, []
    try:
        for n, (exp, method, seed, cfg) in enumerate(run_configs(config, exps, root), start=1):
            if out is not None:
                found += _other_config(Path(out) / "runs" / exp / method / f"seed{seed}", exps[exp], method, cfg)
            if time.monotonic() - shown > 5:
                shown = time.monotonic()
                print(f"checking the tier's run configs: {n:,} of about {total:,} ({shown - start:.0f} s)",
                      file=sys.stderr)
    except ConfigError as e:
        raise ValueError(f"config error: {e}") from None
    if found and not config.get("replace_different"):
        more = f" and {len(found) - 3} more" if len(found) > 3 else ""
        raise ValueError(f"{len(found)} run folders hold runs of another config than this tier plans: "
                         f"{'; '.join(found[:3])}{more}. Nothing was run or removed. Use another `results:` "
                         "folder, or pass --config replace_different=True to replace them")
    return n


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _other_config(folder: Path, spec: dict, method: str, cfg) -> list[str]:
    """[what differs] when `folder` holds a run of another config than `cfg`, else [].  A run the planned config
    lengthens (more rounds) is continued, not replaced.  The run rule's own options (name, threads, progress) and
    a tuned run's step size, which its choice file sets later, are not compared."""
    record = folder / "run.json"
    if not record.is_file():
        return []
    try:
        old = json.loads(record.read_text()).get("config") or {}
    except (OSError, ValueError, AttributeError):
        return []  # the run itself refuses an unreadable record, naming it
    from .resume import _identity, extends
    new = cfg.to_dict()
    a, b = _flat(_identity(old)), _flat(_identity(new))
    skip = {"run.threads", "seed"} | ({"federation.lr"} if lr_source(spec, method) else set())
    diff = [f"{k}: {a.get(k)!r} there, {b.get(k)!r} planned" for k in sorted(a.keys() | b.keys())
            if k not in skip and a.get(k) != b.get(k)]
    if not diff or extends(old, new):
        return []
    return [f"{folder} ({'; '.join(diff[:3])}{'; ...' if len(diff) > 3 else ''})"]


def planned_sources(configfile: str | Path, root: str | Path | None = None) -> tuple[list[str], list[tuple[str, str | None]]]:
    """(hub model repos, (data repo, config) pairs) that the planned runs of a workflow tier load.  The tier's
    base configs are relative to `root`, by default the folder above the config that holds the Snakefile."""
    from .checks import load_yaml
    from .registry import models
    MODELS = models()
    from .tasks.text import hub_source
    tier = load_yaml(Path(configfile).read_text(), str(configfile))
    if root is None:
        root = next((p for p in Path(configfile).resolve().parents if (p / "Snakefile").exists()), Path())
    models, data = set(), set()
    for _, _, _, cfg in run_configs(tier, experiments(tier), root):
        spec = MODELS.get(cfg.task.get("model", ""))
        if spec is not None and spec.hub and not spec.tiny and not spec.packaged:
            models.add(spec.hub)
        source = hub_source(cfg.task["name"])
        if source:
            data.add(source)
    return sorted(models), sorted(data, key=lambda s: (s[0], s[1] or ""))
