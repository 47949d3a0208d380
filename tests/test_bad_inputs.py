"""Every bad input of `python -m hiso run` is refused before compute: the message names the key and the value,
the exit code is 2 (4 for an unavailable model or data set), and nothing is written.  The table in
docs/bad-inputs.md is rendered from these cases and the messages they really produce:

    HISO_WRITE_DOCS=1 .venv/bin/python -m pytest tests/test_bad_inputs.py   # rewrite the page
"""
import json
import os
import re
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from hiso.__main__ import main
from hiso.rundir import RunDir

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "bad-inputs.md"
Q = "task: {name: quadratic, dim: 20}\nfederation: {rounds: 2}\n"

# (what, config file text, extra CLI arguments, expected text in the message, exit code)
CASES = [
    ("duplicate YAML key", "federation: {lr: 0.1}\nfederation: {rounds: 3}\n", [],
     "duplicate key 'federation' at line 2, column 1", 2),
    ("empty config file", "", [], "is empty", 2),
    ("YAML syntax error", "federation: {lr: 0.1\n", [], "c.yaml:2:1: invalid YAML", 2),
    ("unknown key", Q + "run: {eval_evry: 5}\n", [], "unknown config key 'run.eval_evry' (did you mean 'eval_every'?)", 2),
    ("wrong type", "federation: {rounds: ten}\n", [], "federation.rounds: expected an integer", 2),
    ("infinite step size", "federation: {lr: .inf}\n", [], "federation.lr must be a finite number, got inf", 2),
    ("NaN perturbation size", "federation: {mu: .nan}\n", [], "federation.mu must be > 0, got nan", 2),
    ("NaN divergence factor", "run: {diverge_factor: .nan}\n", [], "run.diverge_factor must be a finite number", 2),
    ("infinite damping", "curvature: {kind: damped_oracle, damping: .inf}\n", [],
     "curvature.damping must be >= 0 and finite", 2),
    ("RMSProp power out of range", "curvature: {kind: rmsprop, rmsprop_power: -3}\n", [],
     "curvature.rmsprop_power must be in [0, 1]", 2),
    ("block larger than the model", Q + "curvature: {kind: block_diagonal, block_size: 64}\n", [],
     "curvature.block_size must be <= the model's 20 parameters, got 64", 2),
    ("negative seed", "seed: -1\n", [], "seed must be in [0, 2^32), got -1", 2),
    ("seed >= 2^32", "seed: 4294967296\n", [], "seed must be in [0, 2^32), got 4294967296", 2),
    ("more clients per round than clients", "federation: {clients_per_round: 9}\n", [],
     "federation.clients_per_round must be in [1, 6], got 9", 2),
    ("absurd client count", "federation: {num_clients: 1000000000}\n", [],
     "federation.num_clients must be <= 100,000", 2),
    ("data larger than memory", "task: {name: quadratic, dim: 50000000}\nfederation: {num_clients: 100000}\n", [],
     "its data needs 37,254 GiB, more than the memory this process may use (bounded by", 2),
    ("absurd batch size", "federation: {batch_size: 1000000000}\n", [], "federation.batch_size must be <= 65,536", 2),
    ("Dirichlet alpha 0", "task: {name: digits, alpha: 0}\n", [], "task.alpha must be > 0 (or .inf), got 0", 2),
    ("Dirichlet alpha NaN", "task: {name: digits, alpha: .nan}\n", [], "task.alpha must be > 0 (or .inf), got nan", 2),
    ("no conv channels", "task: {name: digits, channels: 0}\n", [], "task.channels must be in [1, 1024], got 0", 2),
    ("test fraction above 1", "task: {name: digits, test_fraction: 1.5}\n", [],
     "task.test_fraction must be in (0, 1), got 1.5", 2),
    ("zero Lipschitz constant", "task: {name: quadratic, lipschitz: 0}\n", [], "task.lipschitz must be > 0 and finite, got 0", 2),
    ("negative Lipschitz constant", "task: {name: quadratic, lipschitz: -1}\n", [], "task.lipschitz must be > 0", 2),
    ("unregistered task", "task: {name: wsc.fixed}\n", [], "task.name: 'wsc.fixed' is not a registered task", 2),
    ("unknown model", "task: {name: sst2, model: gpt-5}\n", [], "task.model must be a registered model", 2),
    ("bf16 full-parameter training", "task: {name: sst2, model: tiny-llama, frozen_dtype: bfloat16}\n", [],
     "task.frozen_dtype must be float32 with trainable: full", 2),
    ("weight decay a method cannot replay", "method: fedkseed\nfederation: {weight_decay: 5.0e-4}\n", [],
     "federation.weight_decay: method fedkseed does not implement weight decay", 2),
    ("median of 2 uploads", "federation: {aggregator: median}\n", [],
     "federation.aggregator must be robust at 2 clients per round: the median of 2 uploads is their mean", 2),
    ("trimmed mean that trims nothing", "federation: {aggregator: trimmed_mean, clients_per_round: 6}\n", [],
     "trims nothing", 2),
    ("faulty clients for a method without them", "method: fedavg\nfederation: {faulty_clients: 1}\n", [],
     "method fedavg aggregates without them", 2),
    ("more faulty clients than clients", "federation: {faulty_clients: 7}\n", [],
     "federation.faulty_clients must be in [0, num_clients=6], got 7", 2),
    ("a simulator-only method on Flower", "method: fedavg\nfederation: {engine: flower}\n", [],
     "federation.engine: method fedavg runs only in the simulator, got 'flower'", 2),
    ("faults injected into a deployment", "federation: {engine: flower, faulty_clients: 1}\n", [],
     "federation.faulty_clients must be 0 with engine flower", 2),
    ("participation file that does not exist", "federation: {dropped_from: nowhere.csv}\n", [],
     "federation.dropped_from must be an existing metrics.csv of a deployed run", 2),
    ("binary config file", b"\xff\xfe\x00\x01\x02binary", [], "is not readable UTF-8 text (UnicodeDecodeError)", 2),
    ("UTF-16 config file", "task: {name: quadratic}\n".encode("utf-16"), [], "is not readable UTF-8 text", 2),
    ("a folder as --config", Q, ["--config", "{tmp}"], "is a directory", 2),
    ("a YAML list with --set", "- federation\n- rounds\n", ["--set", "federation.rounds=3"],
     "holds a list, not a mapping of sections", 2),
    ("a name that climbs out of results/runs", Q + "name: ../../x\n", [], "name must be one folder name", 2),
    ("an absolute name", Q + "name: /abs\n", [], "got '/abs'", 2),
    ("the name ..", Q + "name: '..'\n", [], "got '..'", 2),
    ("unwritable --out", Q, ["--out", "{tmp}/file/run"], "cannot write there", 2),
    ("--out held by another run", Q, ["--out", "{tmp}/held"], "is being written by another run (pid", 2),
    ("--out holds another config", Q, ["--out", "{tmp}/other"], "holds a run of a different config", 2),
    ("unreadable run.json", Q, ["--out", "{tmp}/corrupt"], "run.json is unreadable", 2),
    ("results without a run.json", Q, ["--out", "{tmp}/orphan"],
     "holds checkpoint.pt, metrics.csv but no run.json", 2),
    ("a run.json that is null", Q, ["--out", "{tmp}/null"], "is not a run's record (it holds a NoneType", 2),
    ("a run.json whose segments is not a list", Q, ["--out", "{tmp}/segments"],
     "is not a run's record (its 'segments' is a str)", 2),
    ("YAML 1.1 octal", "federation: {rounds: 010}\n", [], "federation.rounds: '010' at line 1, column 22 is a YAML 1.1", 2),
    ("YAML 1.1 base 60", "run: {eval_every: 1:00}\n", [], "eval_every: '1:00' at line 1, column 19", 2),
    ("YAML 1.1 hexadecimal", "seed: 0x10\n", [], "seed: '0x10' at line 1, column 7 is a YAML 1.1 number form that "
     "reads as 16", 2),
    ("YAML 1.1 binary", "federation: {rounds: 0b101}\n", [], "reads as 5 here", 2),
    ("YAML 1.1 number in --set", Q, ["--set", "federation.rounds=1:5"], "reads as 65 here", 2),
    ("a duplicate key beside a merge key", "base: &b {rounds: 3}\nfederation: {<<: *b, lr: 0.1, lr: 0.2}\n", [],
     "duplicate key 'lr' at line 2, column 31", 2),
    ("a list as a mapping key", "federation: {[1, 2]: 3}\n", [], "a list used as a mapping key at line 1", 2),
    ("one key set twice", Q, ["--set", "federation.lr=0.1", "--set", "federation.lr=0.3"],
     "--set federation.lr is given twice ('0.1' and '0.3')", 2),
    ("a FIFO as --config", Q, ["--config", "{tmp}/fifo"], "is not a regular file (a FIFO, socket or device)", 2),
    ("a 2 MB config", "# " + "x" * 2_000_000 + "\n", [], "has 2,000,003 bytes, more than a config's limit of 1,000,000", 2),
    ("participation without dropped_clients", "federation: {dropped_from: '{tmp}/d.csv'}\n", ["#round,x\n1,2\n"],
     "has no round and dropped_clients columns", 2),
    ("participation with a NaN round", "federation: {dropped_from: '{tmp}/d.csv'}\n",
     ["#round,dropped_clients\nnan,[]\n"], "line 2: round 'nan' is not a positive integer", 2),
    ("participation with round 1.5", "federation: {dropped_from: '{tmp}/d.csv'}\n",
     ["#round,dropped_clients\n1.5,[]\n"], "round '1.5' is not a positive integer", 2),
    ("participation with broken JSON", "federation: {dropped_from: '{tmp}/d.csv'}\n",
     ['#round,dropped_clients\n1,"[1,"\n'], "dropped_clients '[1,' is not JSON", 2),
    ("participation naming client 7 of 6", "federation: {dropped_from: '{tmp}/d.csv'}\n",
     ['#round,dropped_clients\n1,"[7]"\n'], "names a client outside 0..5", 2),
    ("participation dropping every client", "federation: {dropped_from: '{tmp}/d.csv'}\n",
     ['#round,dropped_clients\n1,"[0,1,2,3,4,5]"\n'], "every round drops every one of the 6 clients", 2),
]


def _prepare(tmp: Path, what: str, args: list):
    (tmp / "file").write_text("a file, not a folder")
    for a in args:
        if a.startswith("#"):  # the participation file's text (federation.dropped_from)
            (tmp / "d.csv").write_text(a[1:])
    if what == "a FIFO as --config":
        os.mkfifo(tmp / "fifo")
    if what == "--out held by another run":
        rd = RunDir(tmp / "held")
        rd.lock()
        return rd
    if what == "--out holds another config":
        other = tmp / "o.yaml"
        other.write_text(Q.replace("rounds: 2", "rounds: 2, lr: 0.5"))
        assert main(["run", "--config", str(other), "--out", str(tmp / "other")]) == 0
    if what == "results without a run.json":
        (tmp / "orphan").mkdir()
        (tmp / "orphan" / "metrics.csv").write_text("round,train_loss\n1,0.5\n")
        (tmp / "orphan" / "checkpoint.pt").write_bytes(b"another run's checkpoint")
    if what in ("a run.json that is null", "a run.json whose segments is not a list"):
        folder = tmp / ("null" if "null" in what else "segments")
        other = tmp / "o.yaml"
        other.write_text(Q)
        assert main(["run", "--config", str(other), "--out", str(folder)]) == 0
        info = json.loads((folder / "run.json").read_text())
        (folder / "run.json").write_text("null" if "null" in what else json.dumps({**info, "segments": "x"}))
    if what == "unreadable run.json":
        (tmp / "corrupt").mkdir()
        (tmp / "corrupt" / "run.json").write_text('{"name": "run", "conf')
    return None


def _snapshot(tmp: Path) -> dict:
    return {p.relative_to(tmp): p.read_bytes() for p in tmp.rglob("*") if p.is_file() and p.name != ".lock"}


def refusal(tmp: Path, what, text, args, capsys):
    conf = tmp / "c.yaml"
    conf.write_bytes(text) if isinstance(text, bytes) else conf.write_text(text.replace("{tmp}", str(tmp)))
    held = _prepare(tmp, what, args)
    capsys.readouterr()
    before = _snapshot(tmp)
    argv = ["run", "--config", str(conf), *[a.format(tmp=tmp) for a in args if not a.startswith("#")]]
    if "--out" not in args:
        argv += ["--out", str(tmp / "out")]
    rc = main(argv)
    err = capsys.readouterr().err.strip()
    if held is not None:
        held.unlock()
    after = _snapshot(tmp)
    assert not (tmp / "out").exists() and after == before, "a refused run wrote something"
    return rc, err


@pytest.mark.parametrize("what,text,args,expected,code", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_refused_before_compute(tmp_path, capsys, what, text, args, expected, code):
    rc, err = refusal(tmp_path, what, text, args, capsys)
    assert rc == code and expected in err, err
    assert "\n" not in err, "one line"


# ---------------------------------------------------------------- what the workflow refuses, what only warns
SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")
TIER = ("results: {tmp}/res\nseeds: [0]\nwarm_runner: false\nexperiments:\n  q:\n    title: quadratic\n"
        "    base: workflows/config/base/quadratic.yaml\n    metric: rel_suboptimality\n    target: 0.1\n"
        "    sets: {{federation.rounds: 10, task.dim: 50}}\n    methods:\n      hiso: {{method: hiso, federation.lr: 0.01}}\n")
# (what, the tier's text after these replacements, expected text); "100k": a generated grid of 100,000 runs
WORKFLOW_CASES = [
    ("a YAML 1.1 number in a tier", {"seeds: [0]": "seeds: [010]"}, "seeds[0]: '010' at line 2, column 9"),
    ("an experiment name with a space", {"  q:": "  my exp:"}, "experiment 'my exp' must be one folder name"),
    ("a tier of 100,000 runs", "100k", "the tier plans 100,000 runs, more than max_runs (10,000)"),
    ("results: holding another config's run", "other", "1 run folders hold runs of another config"),
]


def _tier_text(tmp: Path, change) -> str:
    text = TIER.format(tmp=tmp)
    if change == "100k":
        tasks = "\n".join(f"      t{i}: {{metric: accuracy, target: 0.5}}" for i in range(1000))
        models = ", ".join(f"m{i}" for i in range(100))
        return (f"results: {tmp}/res\nseeds: [0]\ngrids:\n  g:\n    base: workflows/config/base/digits.yaml\n"
                f"    models: [{models}]\n    tasks:\n{tasks}\n    methods:\n      hiso: {{method: hiso}}\n")
    if change == "other":  # the folder holds a finished run of the same experiment at another step size
        from hiso.config import load_config
        old = load_config(ROOT / "workflows/config/base/quadratic.yaml",
                          ["federation.rounds=10", "task.dim=50", "method=hiso", "federation.lr=0.03", "seed=0"])
        folder = tmp / "res" / "runs" / "q" / "hiso" / "seed0"
        folder.mkdir(parents=True)
        (folder / "run.json").write_text(json.dumps({"config": old.to_dict(), "status": "complete"}))
        return text
    for a, b in change.items():
        text = text.replace(a, b)
    return text


_SEEN: dict = {}  # (kind, what) -> (exit, message with <tmp>): the page reuses what the cases measured


def workflow_refusal(tmp: Path, change) -> tuple[int, str]:
    tier = tmp / "tier.yaml"
    tier.write_text(_tier_text(tmp, change))
    p = subprocess.run([SNAKEMAKE, "-n", "--configfile", str(tier)], cwd=ROOT, capture_output=True, text=True,
                       env={**os.environ, "HF_HUB_OFFLINE": "1"})
    lines = (p.stdout + p.stderr).splitlines()
    at = next(i for i, line in enumerate(lines) if re.search(r"Error in file .*, line \d+:$", line))
    return p.returncode, lines[at + 1].strip()


@pytest.mark.parametrize("what,change,expected", WORKFLOW_CASES, ids=[c[0] for c in WORKFLOW_CASES])
def test_the_workflow_refuses_at_planning(tmp_path, what, change, expected):
    rc, err = workflow_refusal(tmp_path, change)
    assert rc != 0 and expected in err, err
    assert not (tmp_path / "res" / "logs").exists()  # nothing ran
    _SEEN[("tier", what)] = rc, err.replace(str(tmp_path), "<tmp>")


def _cli(tmp: Path, text: str, limit_kb: int | None = None) -> tuple[int, str]:
    (tmp / "c.yaml").write_text(text)

    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (limit_kb * 1024, resource.RLIM_INFINITY))
    p = subprocess.run([sys.executable, "-m", "hiso", "run", "--config", "c.yaml", "--out", "out"], cwd=tmp,
                       capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)},
                       preexec_fn=limit if limit_kb else None)
    lines = [line for line in p.stderr.splitlines() if line.startswith(("WARNING", "config error"))]
    return p.returncode, lines[0] if lines else ""


LIMIT_CASES = [  # (what, config, ulimit -v in KB or None, expected text, exit)
    ("data larger than ulimit -v", "task: {name: quadratic, dim: 1000000}\nfederation: {num_clients: 1000}\n",
     6_000_000, "more than the memory this process may use (bounded by", 2),
    ("an option the method ignores (a warning)", "method: decomfl\ntask: {name: quadratic, dim: 20}\n"
     "federation: {rounds: 2}\ncurvature: {beta: 0.5}\nrun: {progress: false}\n", None,
     "left out of the run's identity", 0),
]


@pytest.mark.parametrize("what,text,limit,expected,code", LIMIT_CASES, ids=[c[0] for c in LIMIT_CASES])
def test_limits_and_warnings(tmp_path, what, text, limit, expected, code):
    rc, line = _cli(tmp_path, text, limit)
    assert rc == code and expected in line, line
    assert code == 0 or not (tmp_path / "out").exists()
    _SEEN[("cli", what)] = rc, line
    from hiso.tasks import usable_memory
    if limit and usable_memory()[0] > limit * 1024:  # the limit is the tightest bound: the message names it
        assert "bounded by the address-space limit (ulimit -v)" in line, line


def _more_sections(tmp_path_factory) -> str:
    rows = []
    for what, change, _ in WORKFLOW_CASES:
        if ("tier", what) not in _SEEN:  # run alone: measure it here
            tmp = tmp_path_factory.mktemp("tier")
            rc, err = workflow_refusal(tmp, change)
            _SEEN[("tier", what)] = rc, err.replace(str(tmp), "<tmp>")
        rc, err = _SEEN[("tier", what)]
        shown = ("a grid of 100 models x 1,000 tasks" if change == "100k" else
                 "another step size's finished run in its run folder" if change == "other" else
                 "; ".join(f"`{a.strip()}` -> `{b.strip()}`" for a, b in change.items()))
        rows.append(f"| {what} | {shown} | {err.replace('|', chr(92) + '|')} | {rc} |")
    limits = []
    for what, text, limit, _, _ in LIMIT_CASES:
        rc, line = _SEEN.get(("cli", what)) or _cli(tmp_path_factory.mktemp("cli"), text, limit)
        line = re.sub(r"\(bounded by .*: [\d.,]+ GiB\)", "(bounded by <the tightest of RAM, ulimit -v and the "
                      "cgroup's limit>)", line)
        run = f"`{text.strip().replace(chr(10), '; ')}`" + (f" under `ulimit -v {limit}`" if limit else "")
        limits.append(f"| {what} | {run} | {line} | {rc} |")
    return ("\n## What `snakemake` refuses while planning a tier\n\n"
            "Each is refused before any job runs (`snakemake -n` prints the same), nothing is written, and Snakemake "
            "exits 1. The example tier is one quadratic experiment (`tests/test_bad_inputs.py`, TIER) with the change "
            "shown.\n\n| bad input | tier | message | exit |\n|---|---|---|---|\n" + "\n".join(rows) + "\n"
            "\n## Limits and warnings of `python -m hiso run`\n\n"
            "Run in a fresh process (the first under an address-space limit). A warning runs the config: the ignored "
            "option is reset to its default, so the run keeps its identity (its config hash).\n\n"
            "| case | config | first line printed | exit |\n|---|---|---|---|\n" + "\n".join(limits) + "\n")


def test_the_docs_table_is_what_the_cases_produce(tmp_path_factory, capsys):
    rows = []
    for what, text, args, _, _ in CASES:
        tmp = tmp_path_factory.mktemp("case")
        rc, err = refusal(tmp, what, text, args, capsys)
        err = err.replace(str(tmp), "<tmp>").replace("|", "\\|")
        err = " ".join(err.split())
        shown = " ".join(a.format(tmp="<tmp>") for a in args if not a.startswith("#"))
        file = "".join(f", with `<tmp>/d.csv`: `{a[1:].strip().replace(chr(10), '; ')}`" for a in args
                       if a.startswith("#"))
        err = re.sub(r"\b[0-9a-f]{16}\b", "<hash>", err)
        err = re.sub(r"\(bounded by [^)]*\)", "(bounded by <this machine's limit>)", err)
        if isinstance(text, bytes):
            given = f"bytes `{text[:16]!r}`"
        elif len(text) > 200:
            given = f"`{text[:12]}...` ({len(text):,} characters)"
        else:
            given = f"`{text.strip().replace(chr(10), '; ')}`".replace("{tmp}", "<tmp>") if text.strip() else "(empty file)"
        rows.append(f"| {what} | {given}{f' + `{shown}`' if shown else ''}{file} | {err} | {rc} |")
    page = ("# Bad input: what `python -m hiso run` refuses\n\n"
            "Every row is a case of `tests/test_bad_inputs.py`, with the message it really printed (paths shown as\n"
            "`<tmp>`, pids vary). Each is refused before any model or data set is loaded, and writes nothing.\n"
            "Exit codes: 2 refused, 3 diverged or failed, 4 model or data unavailable, 5 an output could not be\n"
            "written (e.g. a full disk; rerun the same command and the run resumes).\n\n"
            "Regenerate: `HISO_WRITE_DOCS=1 .venv/bin/python -m pytest tests/test_bad_inputs.py`.\n\n"
            "| bad input | config (and arguments) | message | exit |\n|---|---|---|---|\n" + "\n".join(rows) + "\n"
            + _more_sections(tmp_path_factory))
    page = page.replace(f"pid {os.getpid()}", "pid <pid>")
    if os.environ.get("HISO_WRITE_DOCS"):
        PAGE.write_text(page)
    assert PAGE.read_text() == page, "docs/bad-inputs.md is stale: HISO_WRITE_DOCS=1 pytest tests/test_bad_inputs.py"
