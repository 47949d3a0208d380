"""The runner: reproducibility, DeComFL == HiSo(identity), resume, and clear failures on bad input."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from hiso.config import ConfigError, load_config
from hiso.protocol import Upload
from hiso.results import reproducible
from hiso.run import RunFailed, build_federation, run

ROOT = Path(__file__).resolve().parents[1]
DIGITS = {"task": {"name": "digits", "alpha": 1.0},
          "federation": {"rounds": 30, "lr": 2e-3, "perturbations": 2, "batch_size": 16, "local_steps": 2}}


def no_wall(df: pd.DataFrame) -> pd.DataFrame:
    return reproducible(df)


def test_same_config_same_numbers(cfg_factory, tmp_path):
    a = run(cfg_factory(**DIGITS), tmp_path / "a").metrics
    b = run(cfg_factory(**DIGITS), tmp_path / "b").metrics
    pd.testing.assert_frame_equal(no_wall(a), no_wall(b))
    assert a["accuracy"].notna().sum() == 3  # rounds 10, 20, 30


def test_decomfl_is_hiso_with_identity_bit_for_bit(cfg_factory):
    d = run(cfg_factory(method="decomfl", **DIGITS)).metrics
    h = run(cfg_factory(method="hiso", curvature={"kind": "identity"}, **DIGITS)).metrics
    pd.testing.assert_frame_equal(no_wall(d), no_wall(h), check_exact=True)
    learned = run(cfg_factory(method="hiso", **DIGITS)).metrics  # the one argument does change the run
    assert not no_wall(learned).equals(no_wall(d))


def test_seed_changes_the_run(cfg_factory):
    a = run(cfg_factory(seed=0, **DIGITS)).metrics
    b = run(cfg_factory(seed=1, **DIGITS)).metrics
    assert not np.allclose(a["train_loss"], b["train_loss"])


@pytest.mark.parametrize("method", ["hiso", "decomfl"])
def test_training_makes_progress(cfg_factory, method):
    quad = run(cfg_factory(method=method, task={"name": "quadratic", "dim": 100, "effective_rank": 5},
                           federation={"rounds": 150, "lr": 0.02})).metrics
    assert quad["rel_suboptimality"].dropna().iloc[-1] < 0.5
    dig = run(cfg_factory(method=method, task={"name": "digits"}, federation={"rounds": 300, "lr": 0.03},
                          run={"eval_every": 50})).metrics
    loss, acc = dig["test_loss"].dropna(), dig["accuracy"].dropna()
    assert loss.iloc[-1] < loss.iloc[0] - 0.1 and acc.iloc[-1] > 0.25  # chance is 0.1


def test_resume_after_interruption_gives_identical_metrics(cfg_factory, tmp_path):
    cfg = cfg_factory(**{**DIGITS, "run": {"checkpoint_every": 10, "progress": False, "eval_every": 5}})
    full = run(cfg, tmp_path / "full").metrics
    part = run(cfg, tmp_path / "resumed", stop_after=17)  # dies after round 17: checkpoint holds round 10
    assert part.status == "interrupted"
    status = json.loads((tmp_path / "resumed" / "run.json").read_text())
    assert status["status"] == "running" and status["rounds_done"] == 10
    # an unfinished run never shows a metrics.csv (the workflow's output): only its partial metrics
    assert not (tmp_path / "resumed" / "metrics.csv").exists()
    assert len(pd.read_csv(tmp_path / "resumed" / "metrics.partial.csv")) == 10
    resumed = run(cfg, tmp_path / "resumed").metrics
    pd.testing.assert_frame_equal(no_wall(full), no_wall(resumed), check_exact=True)
    assert not (tmp_path / "resumed" / "metrics.partial.csv").exists()
    again = run(cfg, tmp_path / "resumed")  # complete: nothing recomputed
    pd.testing.assert_frame_equal(again.metrics, pd.read_csv(tmp_path / "resumed" / "metrics.csv"))


@pytest.mark.slow
def test_cli_killed_run_resumes_with_same_command(tmp_path):
    conf = tmp_path / "c.yaml"
    conf.write_text(yaml.safe_dump({"name": "kill", "task": {"name": "digits"},
                                    "federation": {"rounds": 150, "lr": 2e-3, "perturbations": 5},
                                    "run": {"checkpoint_every": 10, "eval_every": 10, "progress": False}}))
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "hiso", "run", "--config", str(conf), "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline and not (out / "checkpoint.pt").exists():
        time.sleep(0.05)
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert json.loads((out / "run.json").read_text())["status"] == "running"
    subprocess.run(cmd, cwd=ROOT, env=env, check=True, capture_output=True)
    ref = tmp_path / "ref"
    subprocess.run(cmd[:-1] + [str(ref)], cwd=ROOT, env=env, check=True, capture_output=True)
    a, b = pd.read_csv(out / "metrics.csv"), pd.read_csv(ref / "metrics.csv")
    assert len(a) == 150
    pd.testing.assert_frame_equal(no_wall(a), no_wall(b), check_exact=True)


def test_a_finished_run_extends_to_more_rounds_exactly(cfg_factory, tmp_path):
    """Re-running a complete run with a larger round budget continues it from its checkpoint, and the result
    equals the run that had the larger budget from the start."""
    def cfg(rounds):
        return cfg_factory(task=DIGITS["task"], federation={**DIGITS["federation"], "rounds": rounds},
                           run={"eval_every": 4, "checkpoint_every": 0, "progress": False})
    short = run(cfg(12), tmp_path / "ext")
    assert short.status == "complete" and len(short.metrics) == 12
    extended = run(cfg(20), tmp_path / "ext").metrics
    fresh = run(cfg(20), tmp_path / "fresh").metrics
    pd.testing.assert_frame_equal(no_wall(extended), no_wall(fresh), check_exact=True)
    assert json.loads((tmp_path / "ext" / "run.json").read_text())["status"] == "complete"
    with pytest.raises(RuntimeError, match="different config"):  # fewer rounds is another run, not a prefix
        run(cfg(8), tmp_path / "ext")


def test_a_run_a_stop_rule_ended_continues_exactly_with_continue_stopped(cfg_factory, tmp_path):
    """A run stopped by on_evaluate is final (rerunning changes nothing), unless continue_stopped: then it goes on
    from its final checkpoint to the budget and equals the run that was never stopped (a hold scan's points)."""
    cfg = cfg_factory(task=DIGITS["task"], federation={**DIGITS["federation"], "rounds": 20},
                      run={"eval_every": 4, "checkpoint_every": 0, "progress": False})
    stopped = run(cfg, tmp_path / "s", on_evaluate=lambda fed, task, row: "enough" if row["round"] >= 8 else None)
    assert len(stopped.metrics) == 8 and "stopped" in json.loads((tmp_path / "s" / "run.json").read_text())
    assert len(run(cfg, tmp_path / "s").metrics) == 8  # final without the flag
    continued = run(cfg, tmp_path / "s", continue_stopped=True).metrics
    fresh = run(cfg, tmp_path / "fresh").metrics
    pd.testing.assert_frame_equal(no_wall(continued), no_wall(fresh), check_exact=True)
    info = json.loads((tmp_path / "s" / "run.json").read_text())
    assert info["status"] == "complete" and "stopped" not in info and info["rounds_done"] == 20
    assert len(run(cfg, tmp_path / "s", continue_stopped=True).metrics) == 20  # complete now: nothing to continue


def test_a_run_made_before_an_option_existed_keeps_its_identity(cfg_factory, tmp_path):
    """Options added later (at their defaults) do not turn finished runs into "different" ones; a real change does."""
    cfg = cfg_factory(**{**DIGITS, "federation": {**DIGITS["federation"], "rounds": 6}})
    first = run(cfg, tmp_path)
    info = json.loads((tmp_path / "run.json").read_text())
    info["config"]["run"].pop("eval_split")  # as written before these options existed
    info["config"]["federation"].pop("mu_scale")
    info["config"]["task"].pop("dev_fraction")
    info["config_hash"] = "0123456789abcdef"
    (tmp_path / "run.json").write_text(json.dumps(info))
    again = run(cfg, tmp_path)
    assert again.federation is None and again.status == "complete"  # returned as finished, not recomputed
    pd.testing.assert_frame_equal(no_wall(again.metrics), no_wall(first.metrics))
    assert cfg.hash() == cfg_factory(**{**DIGITS, "federation": {**DIGITS["federation"], "rounds": 6}},
                                     run={"eval_split": "test"}).hash()
    with pytest.raises(RuntimeError, match="different config"):  # the option at another value is another run
        run(cfg_factory(**{**DIGITS, "task": {**DIGITS["task"], "dev_fraction": 0.2},
                           "federation": {**DIGITS["federation"], "rounds": 6}}), tmp_path)


def test_other_config_in_same_folder_is_refused(cfg_factory, tmp_path):
    run(cfg_factory(**DIGITS), tmp_path)
    with pytest.raises(RuntimeError, match="different config"):
        run(cfg_factory(seed=5, **DIGITS), tmp_path)


# --- bad input -----------------------------------------------------------------------------------

def test_unknown_key_is_named():
    with pytest.raises(ConfigError, match=r"unknown config key 'federation\.lrr' \(did you mean 'lr'\?\)"):
        load_config(data={"federation": {"lrr": 0.1}})
    with pytest.raises(ConfigError, match=r"task\.alpah"):
        load_config(data={"task": {"name": "digits", "alpah": 0.3}})
    with pytest.raises(ConfigError, match="unknown config key 'foo'"):
        load_config(data={"foo": 1})


@pytest.mark.parametrize("data,match", [
    ({"federation": {"rounds": "ten"}}, r"federation\.rounds: expected an integer"),
    ({"federation": {"rounds": 2.5}}, r"federation\.rounds: expected an integer"),
    ({"federation": {"lr": "fast"}}, r"federation\.lr: expected a number"),
    ({"federation": {"verify_replay": 1}}, r"federation\.verify_replay: expected true/false"),
    ({"federation": {"difference": "backward"}}, r"federation\.difference: 'backward' is not one of"),
    ({"federation": {"clients_per_round": 9}}, r"clients_per_round must be in \[1, 6\]"),
    ({"curvature": {"beta": 1.0}}, r"curvature\.beta must be in \[0, 1\)"),
    ({"task": {"name": "mnist"}}, r"task\.name: 'mnist' is not a registered task"),
    ({"method": "decomfl", "curvature": {"kind": "diagonal"}}, "contradicts"),
    ({"task": {"name": "digits"}, "curvature": {"kind": "oracle"}}, "oracle needs a task that knows its Hessian"),
])
def test_wrong_types_and_values(data, match):
    with pytest.raises(ConfigError, match=match):
        load_config(data=data)


def test_yaml_scientific_floats_and_set_overrides(tmp_path):
    conf = tmp_path / "c.yaml"
    conf.write_text("federation:\n  lr: 1e-3\n  mu: 5e-4\n")
    cfg = load_config(conf, ["federation.rounds=7", "curvature.beta=0.99", "task.name=digits"])
    assert cfg.federation.lr == 1e-3 and cfg.federation.mu == 5e-4 and cfg.federation.rounds == 7
    assert cfg.curvature.beta == 0.99 and cfg.task["name"] == "digits" and cfg.task["alpha"] == 1.0


def test_cli_reports_config_errors_before_compute(tmp_path):
    conf = tmp_path / "c.yaml"
    conf.write_text("federation:\n  lrr: 1e-3\n")
    p = subprocess.run([sys.executable, "-m", "hiso", "run", "--config", str(conf), "--out", str(tmp_path / "o")],
                       cwd=ROOT, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert p.returncode == 2 and "federation.lrr" in p.stderr and not (tmp_path / "o").exists()


@pytest.mark.parametrize("fault,reason", [
    (lambda up: Upload(up.round, up.client, np.full_like(up.scalars, np.nan)).encode(), "non-finite"),
    (lambda up: Upload(up.round, up.client, np.full_like(up.scalars, 1e9)).encode(), "max_abs_scalar"),
    (lambda up: Upload(up.round, up.client, up.scalars[:, :1].copy()).encode(), "expected 1x5"),
    (lambda up: up.encode()[:-3], "malformed"),
    (lambda up: Upload(up.round + 1, up.client, up.scalars).encode(), "expected"),
])
def test_faulty_client_messages_are_rejected_not_averaged(cfg_factory, fault, reason, caplog):
    cfg = cfg_factory(task={"name": "quadratic", "dim": 30}, federation={"rounds": 5, "num_clients": 4,
                                                                         "clients_per_round": 4})
    fedn, _ = build_federation(cfg)
    clean, _ = build_federation(cfg)
    bad_client = 2
    orig = fedn.upload_hook
    fedn.upload_hook = lambda up: fault(up) if up.client == bad_client else orig(up)
    clean.upload_hook = lambda up: b"" if up.client == bad_client else orig(up)  # same client dropped
    for _ in range(3):
        row = fedn.run_round()
        assert row["rejected"] == 1 and row["accepted"] == 3
        clean.run_round()
    assert reason in caplog.text
    # the aggregate is exactly that of the three good clients
    for a, b in zip(fedn.server.log, clean.server.log):
        assert np.array_equal(a.scalars, b.scalars)


def test_nan_loss_stops_with_status_diverged(cfg_factory, tmp_path):
    cfg = cfg_factory(task={"name": "quadratic", "dim": 50}, federation={"rounds": 200})
    calls = {"n": 0}

    def nan_after_five_rounds(fed):
        clean = fed.task.loss

        def loss(batch):
            calls["n"] += 1
            return float("nan") if calls["n"] > 5 * 2 * 6 else clean(batch)  # 2 clients x 6 passes a round
        fed.task.loss = loss
    with pytest.raises(RunFailed, match="diverged"):
        run(cfg, tmp_path, federation_hook=nan_after_five_rounds)
    info = json.loads((tmp_path / "run.json").read_text())
    assert info["status"] == "diverged" and "training loss nan" in info["message"]
    assert "lower federation.lr" in info["message"]
    rows = pd.read_csv(tmp_path / "metrics.csv")
    assert len(rows) == info["rounds_done"] == 6  # what ran is kept, up to the round that diverged


def test_curvature_failure_stops_with_status_failed(cfg_factory, tmp_path):
    """eps = 0 and a large beta: coordinates the updates never touch decay towards 0 -> loud failure."""
    cfg = cfg_factory(task={"name": "quadratic", "dim": 20}, curvature={"eps": 0.0, "beta": 0.5},
                      federation={"rounds": 400, "lr": 1e-30, "max_abs_scalar": float("inf"), "mu": 1e-30})
    fedn, _ = build_federation(cfg)
    with pytest.raises(RunFailed) as e:
        run(cfg, tmp_path)
    assert e.value.status == "failed" and "non-positive" in e.value.message
    assert json.loads((tmp_path / "run.json").read_text())["status"] == "failed"


def test_run_where_every_upload_is_rejected_is_diverged_not_silent(cfg_factory, tmp_path):
    cfg = cfg_factory(task={"name": "quadratic", "dim": 20}, federation={"rounds": 100, "max_abs_scalar": 1e-12})
    with pytest.raises(RunFailed, match="every upload was rejected for 10 consecutive rounds") as e:
        run(cfg, tmp_path)
    assert e.value.status == "diverged"
    assert json.loads((tmp_path / "run.json").read_text())["rounds_done"] == 10


def test_exploded_but_finite_loss_is_diverged(cfg_factory, tmp_path):
    """A blown-up fp32 model can freeze at a huge finite loss (the finite differences underflow to 0):
    that is divergence too, not a long useless run."""
    cfg = cfg_factory(method="decomfl", task={"name": "quadratic", "dim": 50},
                      federation={"rounds": 200, "lr": 50.0, "max_abs_scalar": float("inf")})
    with pytest.raises(RunFailed, match="exceeds run.diverge_factor"):
        run(cfg, tmp_path)
    off = cfg_factory(method="decomfl", task={"name": "quadratic", "dim": 50}, run={"diverge_factor": 0.0},
                      federation={"rounds": 30, "lr": 50.0, "max_abs_scalar": float("inf")})
    assert run(off).status == "complete"  # the check can be switched off


def test_eval_split_dev_evaluates_the_held_out_split_and_trains_the_same(cfg_factory):
    """Tuning runs read the dev split: same training, other evaluation numbers; a task without one says so."""
    task = {"name": "digits", "dev_fraction": 0.2}
    test = run(cfg_factory(task=task, federation={"rounds": 4}, run={"eval_every": 2}))
    dev = run(cfg_factory(task=task, federation={"rounds": 4}, run={"eval_every": 2, "eval_split": "dev"}))
    pd.testing.assert_series_equal(test.metrics["train_loss"], dev.metrics["train_loss"])
    assert not np.allclose(test.metrics["test_loss"].dropna(), dev.metrics["test_loss"].dropna())
    dev.federation.load_server_model()
    assert dev.metrics["accuracy"].dropna().iloc[-1] == dev.federation.task.evaluate("dev")["accuracy"]
    assert dev.initial_eval != test.initial_eval
    with pytest.raises(ValueError, match="dev_fraction"):
        run(cfg_factory(task={"name": "digits"}, federation={"rounds": 2}, run={"eval_split": "dev"}))
    with pytest.raises(ConfigError, match="eval_split"):
        cfg_factory(run={"eval_split": "validation"})


@pytest.mark.parametrize("text,msg", [
    ("federation: {lr: 0.1}\nfederation: {rounds: 3}\n", "duplicate key 'federation' at line 2, column 1"),
    ("federation:\n  lr: 0.1\n  lr: 0.2\n", "duplicate key 'lr' at line 3"),
    ("", "is empty"),
    ("federation: {lr: 0.1\n", "invalid YAML"),
    ("federation: {lr: .inf}\n", "federation.lr must be a finite number"),
    ("federation: {mu: .inf}\n", "federation.mu must be a finite number"),
    ("run: {diverge_factor: .nan}\n", "run.diverge_factor must be a finite number"),
])
def test_configs_that_would_silently_change_a_run_are_refused(tmp_path, text, msg):
    from hiso.config import ConfigError, load_config
    f = tmp_path / "c.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError, match=msg):
        load_config(f)
    if "invalid YAML" in msg:
        with pytest.raises(ConfigError, match=rf"{f}:2:1: invalid YAML"):
            load_config(f)


def test_a_round_without_any_answer_is_not_divergence(tmp_path, cfg_factory):
    """A deployment whose sampled clients all missed a round (federation.dropped_from replays that in the
    simulator) measured no loss: the round has NaN train loss, no forward pass and no update, and the run goes on."""
    part = tmp_path / "participation.csv"
    part.write_text("round,dropped_clients\n1,\"[0, 1, 2]\"\n2,[]\n3,[]\n")
    cfg = cfg_factory(task={"name": "quadratic", "dim": 20}, federation={
        "num_clients": 3, "clients_per_round": 2, "rounds": 3, "lr": 0.01, "dropped_from": str(part)})
    m = run(cfg, tmp_path / "r").metrics
    assert m["train_loss"].isna().tolist() == [True, False, False]
    assert m["forward_passes"].tolist()[0] == 0 and m["accepted"].tolist() == [0, 2, 2]


def test_also_dev_evaluates_the_dev_split_beside_the_test_split(cfg_factory, tmp_path):
    """run.also_dev: every evaluation writes dev_loss / dev_accuracy beside the test metrics (and the zero-shot
    evaluation too), so that a checkpoint can be selected on dev; off, the config and its hash are unchanged."""
    task = {"name": "digits", "alpha": 1.0, "dev_fraction": 0.15}
    fed = {"num_clients": 3, "clients_per_round": 2, "rounds": 4, "lr": 0.03}
    on = cfg_factory(task=task, federation=fed, run={"eval_every": 2, "also_dev": True})
    res = run(on, tmp_path / "on")
    m = res.metrics.set_index("round")
    assert {"dev_loss", "dev_accuracy", "test_loss", "accuracy"} <= set(m.columns)
    assert m.loc[[2, 4], "dev_loss"].notna().all() and m.loc[[1, 3], "dev_loss"].isna().all()
    assert (m.loc[[2, 4], "dev_loss"] != m.loc[[2, 4], "test_loss"]).all()  # another split, not a copy
    initial = json.loads((tmp_path / "on/run.json").read_text())["initial_eval"]
    assert {"dev_loss", "dev_accuracy", "test_loss"} <= set(initial)
    off = run(cfg_factory(task=task, federation=fed, run={"eval_every": 2}), tmp_path / "off")
    assert "dev_loss" not in off.metrics.columns
    assert m["test_loss"].equals(off.metrics.set_index("round")["test_loss"])  # dev reads change nothing
    explicit = cfg_factory(task=task, federation=fed, run={"eval_every": 2, "also_dev": False})
    assert explicit.hash() == cfg_factory(task=task, federation=fed, run={"eval_every": 2}).hash()


@pytest.mark.parametrize("task, run_sets", [({"name": "digits", "alpha": 1.0}, {}),
                                            ({"name": "digits", "alpha": 1.0, "dev_fraction": 0.15},
                                             {"eval_split": "dev"})])
def test_also_dev_without_a_dev_split_or_on_dev_runs_is_refused(cfg_factory, task, run_sets):
    with pytest.raises(ConfigError, match="run.also_dev"):
        cfg_factory(task=task, run={"also_dev": True, **run_sets})
