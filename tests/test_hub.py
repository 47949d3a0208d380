"""The hub mirror for offline compute nodes (hiso/hub.py), its fixtures in the hub's exact schemas
(hiso/tasks/fixtures.py), `python -m hiso fetch`, and the paper tier's CPU rehearsal through Snakemake."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from hiso import hub, plan
from hiso.__main__ import main
from hiso.tasks import fixtures
from hiso.tasks.text import HUB, load_hub

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")
PAPER = ROOT / "workflows" / "config" / "paper.yaml"


@pytest.fixture(scope="module")
def mirror(tmp_path_factory):
    root = tmp_path_factory.mktemp("mirror")
    fixtures.write_mirror(root)
    return root


def test_fixtures_have_the_hub_schemas(mirror):
    import datasets
    sst2 = datasets.load_from_disk(str(hub.data_dir(mirror, "nyu-mll/glue", "sst2")))
    assert set(sst2) == {"train", "validation", "test"}
    assert sst2["train"].features["label"].names == ["negative", "positive"]
    assert sst2["train"].features["idx"].dtype == "int32" and set(sst2["test"]["label"]) == {-1}
    cb = datasets.load_from_disk(str(hub.data_dir(mirror, "aps/super_glue", "cb")))
    assert cb["validation"].features["label"].names == ["entailment", "contradiction", "neutral"]
    wsc = datasets.load_from_disk(str(hub.data_dir(mirror, "aps/super_glue", "wsc.fixed")))
    assert {"span1_index", "span2_text"} <= set(wsc["train"].features) and set(wsc["test"]["label"]) == {-1}
    multirc = datasets.load_from_disk(str(hub.data_dir(mirror, "aps/super_glue", "multirc")))
    assert set(multirc["train"][0]["idx"]) == {"paragraph", "question", "answer"}
    squad = datasets.load_from_disk(str(hub.data_dir(mirror, "rajpurkar/squad", None)))
    row = squad["validation"][0]
    assert set(squad) == {"train", "validation"} and set(row["answers"]) == {"text", "answer_start"}
    assert row["context"][row["answers"]["answer_start"][0]:].startswith(row["answers"]["text"][0])
    assert len(HUB) + 1 == len(list((mirror / "data").glob("*/*/*")))
    lock = json.loads((mirror / hub.LOCK).read_text())
    assert all(v == fixtures.FIXTURE for part in lock.values() for v in part.values())


def test_a_run_with_a_mirror_loads_only_from_it(mirror, tmp_path, monkeypatch):
    monkeypatch.delenv(hub.MIRROR_ENV, raising=False)
    out = tmp_path / "run"
    args = ["run", "--config", str(ROOT / "workflows/config/base/paper_lm.yaml"), "--hub-mirror", str(mirror),
            "--set", "task.name=wsc", "--set", "task.model=opt-125m", "--set", "federation.rounds=2",
            "--set", "run.eval_every=2", "--set", "task.train_size=24", "--set", "task.test_size=8",
            "--set", "task.dev_size=4", "--set", "federation.batch_size=4", "--set", "task.device=cpu",
            "--set", "run.progress=false", "--out", str(out)]
    try:
        assert main(args) == 0
    finally:
        os.environ.pop(hub.MIRROR_ENV, None)
    info = json.loads((out / "run.json").read_text())
    assert info["hub_mirror"]["mirror"] == str(mirror.resolve())
    assert info["hub_mirror"]["models"]["facebook/opt-125m"] == fixtures.FIXTURE
    assert len(pd.read_csv(out / "metrics.csv")) == 2


def test_a_mirror_without_the_entry_names_the_fetch_command(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(hub.MIRROR_ENV, str(tmp_path))
    with pytest.raises(Exception, match="python -m hiso fetch"):
        load_hub("nyu-mll/glue", "sst2", "train")
    rc = main(["run", "--config", str(ROOT / "workflows/config/base/paper_lm.yaml"), "--set", "task.device=cpu",
               "--out", str(tmp_path / "r")])
    assert rc == 4 and "not in the hub mirror" in capsys.readouterr().err


def test_fetch_fills_a_mirror_with_every_planned_source(mirror, tmp_path, capsys):
    assert main(["fetch", "--configfile", str(PAPER), "--to", str(tmp_path / "x"), "--dry-run"]) == 0
    listed = capsys.readouterr().out
    assert "6 hub models, 8 hub data sets" in listed and "aps/super_glue/wsc.fixed" in listed
    models, data = plan.planned_sources(PAPER, ROOT)
    assert "facebook/opt-2.7b" in models and ("rajpurkar/squad", None) in data
    dest = tmp_path / "mirror"
    assert main(["fetch", "--configfile", str(PAPER), "--to", str(dest), "--from", str(mirror)]) == 0
    lock = json.loads((dest / hub.LOCK).read_text())
    assert sorted(lock["models"]) == models and len(lock["datasets"]) == len(data)
    for repo in models:
        assert (hub.model_dir(dest, repo) / "config.json").exists()
    for repo, name in data:
        assert (hub.data_dir(dest, repo, name) / "dataset_dict.json").exists()


def test_fetch_from_the_hub_offline_fails_cleanly(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["fetch", "--configfile", str(PAPER), "--to", str(tmp_path / "m")]) == 4
    assert "fetch:" in capsys.readouterr().err and not (tmp_path / "m" / hub.LOCK).exists()


@pytest.mark.slow
def test_paper_rehearsal_slice_runs_to_the_side_by_side(tmp_path):
    """The paper tier's own rules and base configs on CPU, sliced to DeComFL Table 1's OPT-125M CB cell:
    38 runs (18 reported, 20 tuning), 5 step-size choices, table, figure, side by side; every reported cell of
    the slice is regenerated from 3 seeds.  The whole rehearsal is the same command without `only`."""
    out = tmp_path / "rehearsal"
    cmd = [SNAKEMAKE, "--cores", "2", "--configfile", str(PAPER), "--config", "rehearsal=True", f"results={out}",
           "only=[decomfl-opt-125m-cb]", "-q"]
    subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, text=True)
    side = pd.read_csv(out / "paper_results" / "side_by_side.csv")
    cell = side[(side.model == "opt-125m") & (side.task == "cb")]
    assert len(cell) == 4 and (cell["seeds"] == 3).all()
    assert cell[["regenerated", "regenerated rounds to best", "regenerated paper-convention bytes"]].notna().all().all()
    assert (side["seeds"] > 0).sum() == 4  # nothing outside the slice is filled in
    assert json.loads((out / "tuning" / "decomfl-opt-125m-cb" / "hiso.json").read_text())["sets"]["federation.lr"] > 0
    info = json.loads((out / "runs" / "decomfl-opt-125m-cb" / "hiso" / "seed0" / "run.json").read_text())
    assert info["config"]["task"]["model"] == "opt-125m" and info["config"]["federation"]["rounds"] == 4
    assert info["hub_mirror"]["models"]["facebook/opt-125m"] == fixtures.FIXTURE
