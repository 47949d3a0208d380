# Shared helpers: validate the tier, expand grids into experiments, expand the experiment grid.
import json
import os
import re
import shlex
import sys

from snakemake.utils import validate

# Every job runs the working tree's code: the Snakefile's folder goes first on the import path of snakemake itself
# and (PYTHONPATH) of every job it starts, ahead of any installed copy of the suite from another checkout.
ROOT = workflow.basedir
sys.path.insert(0, ROOT)
os.environ.update(PYTHONPATH=os.pathsep.join([ROOT, *filter(None, [os.environ.get("PYTHONPATH")])]))

from snakemake_interface_executor_plugins.settings import DeploymentMethod  # noqa: E402

# The interpreter of every rule: with `--sdm conda` the rule's conda env (workflows/envs/hiso.yaml), whose
# `python` is first on PATH; otherwise the interpreter running snakemake (the project venv), never whatever
# `python` happens to be on PATH.
CONDA = DeploymentMethod.CONDA in workflow.deployment_settings.deployment_method
PY = "python" if CONDA else sys.executable
ENV = "../envs/hiso.yaml"

from hiso.checks import load_yaml, typed_overrides  # noqa: E402

# `--config seeds=[0,1]` reaches the config as ['0', '1']: read such values as the tier file would, then validate
SCHEMA = Path(ROOT) / "workflows/schemas/config.schema.yaml"
typed_overrides(config, workflow.config_settings.config, load_yaml(SCHEMA.read_text(), str(SCHEMA)))
validate(config, str(SCHEMA))

OUT = config.get("results", "results")


from hiso import plan  # noqa: E402  (the working tree's: the tier's one source of truth)

# Snakemake reads tier files as YAML 1.1 (`seeds: [010]` is 8): read them again as configs are read, which
# refuses YAML 1.1 number forms and duplicate keys, naming the file, line and key
for _tier in workflow.overwrite_configfiles or [Path(ROOT) / "workflows/config/default.yaml"]:
    load_yaml(Path(_tier).read_text(encoding="utf-8"), str(_tier))
from hiso.importgraph import closure  # noqa: E402

config["experiments"] = plan.experiments(config)
EXPERIMENTS = config["experiments"]
# every run's config before any job starts, and never another config's runs replaced unasked (one pass)
plan.check_runs(config, EXPERIMENTS, workflow.basedir, OUT)
TUNING_SEED = config.get("tuning_seed", 100)
EXPERIMENT_PATTERN = "|".join(re.escape(e) for e in EXPERIMENTS) or "(?!)"  # the run rule's exp wildcard
HUB_MIRROR = plan.hub_mirror(config, OUT)


from hiso.gitinfo import commit  # noqa: E402
from hiso.labels import labels as method_labels  # noqa: E402

COMMIT = commit(workflow.basedir)  # the code a results page was written with
import datetime  # noqa: E402

TODAY = datetime.date.today().isoformat()


def code_of(script):
    """A script and every repository file it imports (hiso/importgraph.py): the inputs of the figure, table and
    page rules, so an edit to any of them (figures/style.py, hiso/results.py, ...) re-renders what they made."""
    root = Path(ROOT)
    return [script] + sorted(str(p.relative_to(root.resolve())) for p in closure(root / script, root))


def runs_of(exp):
    return plan.runs_of(config, EXPERIMENTS[exp])


def is_tuning(exp, method, seed):
    return plan.is_tuning(config, EXPERIMENTS[exp], method, seed)


def tuning_arg(exp):
    """--tuning-seed for the table and figure scripts of an experiment with lr grids."""
    return f"--tuning-seed {TUNING_SEED}" if EXPERIMENTS[exp].get("tuned") else ""


def choice_file(exp, method, seed):
    """The step-size choice a reported run of a tuned method reads (none for tuning runs and fixed lrs)."""
    source = plan.lr_source(EXPERIMENTS[exp], method)
    if source is None or is_tuning(exp, method, seed):
        return []
    return [f"{OUT}/tuning/{exp}/{source}.json"]


SCANS = [f"{e}/{m}" for e, spec in EXPERIMENTS.items() for m in spec.get("scans", {})]
SCAN_PATTERN = "|".join(re.escape(s) for s in SCANS) or "(?!)"


def scan_of(scan):
    """'<exp>/<method>' -> (exp, method)."""
    exp, method = scan.rsplit("/", 1)
    return exp, method


def scan_command(exp, method, threads):
    """scan-lr of one scanned method (hiso/scan.py), with its tuning runs' --set assignments."""
    spec = EXPERIMENTS[exp]
    sets = " ".join(f"--set {shlex.quote(a)}" for a in plan.scan_overrides(config, spec, method))
    grid = " ".join(f"{lr!r}" for lr in spec["scans"][method])
    seeds = (f"--seeds {' '.join(str(x) for x in spec['scan_seeds'])}" if spec.get("scan_seeds")
             else f"--seed {TUNING_SEED}")
    return (f"scan-lr --config {spec['base']} {sets} --method {method} --grid {grid} {seeds} "
            f"--metric {spec['metric']} --target {spec['target']} --root {OUT}/runs/{exp} --threads {threads}"
            + (" --hold" if spec.get("scan_hold") else "")
            + (f" --criterion {spec['scan_criterion']}" if spec.get("scan_criterion") else "")
            + (f" --hub-mirror {shlex.quote(HUB_MIRROR)}" if HUB_MIRROR else ""))


def metrics_of(exp):
    """Every run of the experiment that its table reads (the `tune` grid's runs are read by choose_lr only)."""
    only = set(EXPERIMENTS[exp].get("tuning_only", []))
    return [f"{OUT}/runs/{exp}/{m}/seed{s}/metrics.csv" for m, s in runs_of(exp) if m not in only]


def resource(exp, key, default):
    """A run's cluster resource (mem_mb, runtime in minutes, ...) from the tier's per-model `resources`."""
    return EXPERIMENTS[exp].get("resources", {}).get(key, default)


def set_args(exp, method, seed=None):
    """--set arguments of one method of one experiment (values quoted for the shell); a tuning run also
    evaluates on the dev split, with the experiment's tuning_sets."""
    sets = plan.run_sets(config, EXPERIMENTS[exp], method, None if seed is None else int(seed))
    return " ".join(f"--set {shlex.quote(plan.assignment(k, v))}" for k, v in sets.items())


def page_sweeps():
    return [n for n, sw in (config.get("sweeps") or {}).items() if all(p in EXPERIMENTS for p in sw["points"])]


# `--config` keys that change where results go or how jobs start, never what a run computes: a page leaves them out
OPERATIONAL = ("results", "warm_runner", "replace_different", "hub_mirror", "max_runs", "retries")


def page_command(keys=("only", "methods")):
    """The command a results page names: the tier's config files (an overlay after the tier's own, in order), the
    `--config` keys that sliced it (`keys`), and any other key given on the command line that changes what runs
    (`seeds=[0,1]`), so the page can be rebuilt."""
    given = [k for k in workflow.config_settings.config if k not in OPERATIONAL and k not in keys]
    parts = " ".join(f"{k}={_compact(config[k])}" for k in [*keys, *given] if config.get(k))
    files = [_in_checkout(f) for f in workflow.overwrite_configfiles] or ["workflows/config/default.yaml"]
    return f"snakemake --cores all --configfile {' '.join(files)}" + (f" --config '{parts}'" if parts else "")


def _in_checkout(path) -> str:
    """A config file as the page names it: relative to the checkout where it lies inside it."""
    try:
        return Path(path).resolve().relative_to(Path(ROOT).resolve()).as_posix()
    except ValueError:
        return str(path)


def _compact(v):
    return "[" + ",".join(map(str, v)) + "]" if isinstance(v, list) else str(v)


def all_pages():
    return [f"{OUT}/pages/{config['page']['name']}.md"] if config.get("page") else []


def all_tables():
    tables = [f"{OUT}/tables/{exp}.csv" for exp in EXPERIMENTS]
    if config.get("paper_results"):
        tables.append(f"{OUT}/paper_results/side_by_side.csv")
    return tables


def page_runs():
    """Every run the tier's jobs wrote (reported seeds, rounding twins, tuning runs): a page with `runs: true`."""
    return [f"{OUT}/runs/{e}/{m}/seed{s}/metrics.csv" for e in EXPERIMENTS for m, s in runs_of(e)]


def page_choices():
    """Every tuning job's choice (tune / scan), whose JSON lists the runs a scan made inside its job."""
    return [f"{OUT}/tuning/{e}/{m}.json" for e in EXPERIMENTS for m in EXPERIMENTS[e].get("choices", {})]


def page_sensitivity():
    """Experiments tuned by the full-grid protocol (scan_seeds): their page shows the step-size sensitivity."""
    return [e for e, spec in EXPERIMENTS.items() if spec.get("scan_seeds") and spec.get("scans")]


def histogram_methods(exp):
    """The methods of an experiment whose learned H the histogram draws: those of `histograms` a slice kept."""
    return [m for m in (config.get("histograms") or {}).get(exp, []) if m in EXPERIMENTS.get(exp, {}).get("methods", {})]


def all_figures():
    figs = [f"{OUT}/figures/convergence_{exp}.png" for exp in EXPERIMENTS]
    # a tier sliced with `only` or `methods` draws the sweeps and histograms whose experiments and methods it kept
    figs += [f"{OUT}/figures/sweep_{name}.png" for name, sw in (config.get("sweeps") or {}).items()
             if all(p in EXPERIMENTS for p in sw["points"])]
    figs += [f"{OUT}/figures/curvature_histogram_{exp}.png" for exp in config.get("histograms") or {}
             if histogram_methods(exp)]
    if config.get("zeta_rounds"):
        figs.append(f"{OUT}/figures/zeta.png")
    figs += [f"{OUT}/figures/sensitivity_{exp}.png" for exp in page_sensitivity()]
    return figs


wildcard_constraints:
    exp=r"[A-Za-z0-9_.\-]+",
    method=r"[A-Za-z0-9_.@+\-]+",  # "+": a rounding twin's "<method>+ulp" (hiso/noise.py)
    seed=r"\d+",
    sweep=r"[A-Za-z0-9_.\-]+",


# The curvature study tier (`study:`; rules in study.smk, jobs in bench/curvature_study.py).
import json  # noqa: E402

if config.get("study"):  # imports torch: only for the tier that has a study
    from bench import curvature_study as STUDY

STUDY_PROBLEMS = STUDY.problems(config) if config.get("study") else {}
STUDY_OUT = f"{OUT}/study"


def study_method(m):
    return json.dumps({"name": m, **config["study"]["methods"][m]})


def study_eval_files():
    return [f"{STUDY_OUT}/eval/{p}/{m}/{proto}-seed{s}.csv" for p, m, proto, s in STUDY.jobs(config)]


def study_tuning_files(ext):
    return [f"{STUDY_OUT}/tuning/{p}/{m}.{ext}" for p, spec in STUDY_PROBLEMS.items() for m in spec["methods"]]


def all_study():
    return [f"{OUT}/pages/curvature.md"] if STUDY_PROBLEMS else []


# The performance tier (`perf:`; rules in perf.smk, parts in bench/perf.py): `only` selects its jobs.
PERF_JOBS = {n: j for n, j in ((config.get("perf") or {}).get("jobs") or {}).items() if plan.kept(config, n)}
if config.get("perf") and not PERF_JOBS:
    raise ValueError(f"only: {config['only']} matches no job of the perf tier ({', '.join(config['perf']['jobs'])})")
PERF_OUT = f"{OUT}/perf"


def all_perf():
    return [f"{OUT}/pages/perf.md"] if PERF_JOBS else []
