"""The noise floor (hiso/noise.py): rounding twins planned and run one ulp away, the rounding spread beside the
seed spread, robust summaries, and claims only where a paired difference exceeds both spreads."""
from __future__ import annotations

import math

import pandas as pd
import torch
from conftest import make_config
from test_results import write_run

from hiso import plan
from hiso.noise import TWIN, finals, paired, rounding_spread, split_twins, verdict
from hiso.results import compact_markdown, load_runs, summarise
from hiso.run import run


def test_twins_are_planned_one_ulp_away_at_the_same_step_size():
    config = {"seeds": [0, 1, 2], "experiments": {"e": {
        "base": "b.yaml", "metric": "accuracy", "target": 0.5, "rounding": [0, 1],
        "methods": {"decomfl": {"method": "decomfl"}, "hiso": {"method": "hiso", "federation.lr": 0.03}},
        "tune": {"decomfl": [0.01, 0.03]}}}}
    spec = plan.experiments(config)["e"]
    assert spec["twins"] == {f"decomfl{TWIN}": "decomfl", f"hiso{TWIN}": "hiso"}
    assert spec["methods"][f"hiso{TWIN}"] == {"method": "hiso", "federation.lr": 0.03, "run.init_ulps": 1}
    assert spec["methods"][f"decomfl{TWIN}"]["lr_from"] == "decomfl"  # the tuned choice, read from its file
    assert plan.lr_source(spec, f"decomfl{TWIN}") == "decomfl"
    runs = plan.runs_of(config, spec)
    assert [s for m, s in runs if m == f"hiso{TWIN}"] == [0, 1]
    assert not any(m.endswith(TWIN) and s == 100 for m, s in runs)  # no tuning run of a twin


def test_a_twin_starts_one_ulp_away_and_ends_elsewhere():
    """The digits CNN carries a last-bit change of its start into other losses (the quadratic absorbs it: its
    rounding spread is 0, as its tables are the same on every CPU)."""
    from hiso.runner import build_federation
    base = {"task": {"name": "digits"}, "method": "hiso",
            "federation": {"rounds": 30, "lr": 0.03, "batch_size": 32}, "run": {"eval_every": 30}}
    twin = {**base, "run": {"eval_every": 30, "init_ulps": 1}}
    fa, _ = build_federation(make_config(**base))
    fb, _ = build_federation(make_config(**twin))
    for p, q in zip(fa.global_params(), fb.global_params(), strict=True):
        assert torch.equal(q, torch.nextafter(p, torch.full_like(p, math.inf)))
    a, b = run(make_config(**base)).metrics, run(make_config(**twin)).metrics
    assert not a["train_loss"].equals(b["train_loss"])


def test_the_rounding_spread_sits_beside_the_seed_spread_and_claims_need_both(tmp_path):
    for s, (ref, new) in enumerate([(0.50, 0.70), (0.52, 0.71), (0.49, 0.69)]):
        write_run(tmp_path, "decomfl", s, [0.3, ref - 0.01, ref])
        write_run(tmp_path, "hiso", s, [0.3, new - 0.01, new])
        write_run(tmp_path, f"hiso{TWIN}", s, [0.3, new, new + 0.02])
        write_run(tmp_path, f"decomfl{TWIN}", s, [0.3, ref, ref + 0.01])
    t = summarise(load_runs(tmp_path), "accuracy", 0.6).set_index("method")
    assert set(t.index) == {"decomfl", "hiso"}  # twins are no rows of their own
    assert math.isclose(t.loc["hiso", "rounding spread"], 0.02) and t.loc["hiso", "rounding pairs"] == 3
    assert math.isclose(t.loc["hiso", "last-3 accuracy mean"], (0.3 * 3 + 0.69 + 0.70 + 0.70 + 0.71 + 0.68 + 0.69) / 9)
    assert t.loc["hiso", "claim vs decomfl"] == "better"
    lo, hi = t.loc["hiso", "final minus decomfl's (95% CI low)"], t.loc["hiso", "final minus decomfl's (95% CI high)"]
    assert lo < 0.1967 < hi and lo > 0
    md = compact_markdown(t.reset_index(), "accuracy")
    assert "0.0200 (3)" in md and "better (0.197, 95% CI" in md


def test_a_difference_within_a_spread_is_no_claim():
    per_seed = pd.DataFrame({"method": ["a"] * 3 + ["b"] * 3, "seed": [0, 1, 2] * 2,
                             "final": [0.60, 0.61, 0.62, 0.50, 0.52, 0.51]})
    d = paired(per_seed, "a", "b")
    assert d["n"] == 3 and math.isclose(d["mean"], 0.1) and d["lo"] > 0
    assert verdict(d, seed_spread=0.01, round_spread=0.02, higher=True) == "better"
    assert verdict(d, seed_spread=0.01, round_spread=0.2, higher=True).startswith("not distinguishable: |difference|")
    assert verdict(d, seed_spread=0.15, round_spread=0.0, higher=True).endswith("seed spread 0.15")
    assert verdict(d, seed_spread=0.01, round_spread=0.02, higher=False) == "worse"  # a loss: lower is better
    assert "1 paired seed" in verdict(paired(per_seed[per_seed.seed == 0], "a", "b"), 0, 0, True)


def test_a_run_that_drifts_back_after_its_best_is_also_compared_at_its_best(tmp_path):
    """HiSo peaks well above DeComFL and drifts back to DeComFL's level by the last round: the final-round claim
    finds nothing, the claim at the best evaluation (with that summary's own spreads) finds the lead."""
    for s, (ref, peak, end) in enumerate([(0.60, 0.78, 0.61), (0.62, 0.80, 0.60), (0.61, 0.79, 0.62),
                                          (0.63, 0.81, 0.62)]):
        write_run(tmp_path, "decomfl", s, [0.3, ref - 0.05, ref])
        write_run(tmp_path, "hiso", s, [0.3, peak, end])
        if s == 0:
            write_run(tmp_path, f"hiso{TWIN}", s, [0.3, peak + 0.01, end - 0.02])
            write_run(tmp_path, f"decomfl{TWIN}", s, [0.3, ref - 0.04, ref])
    t = summarise(load_runs(tmp_path), "accuracy", 0.9).set_index("method")
    assert t.loc["hiso", "claim vs decomfl"].startswith("not distinguishable: the 95 % interval contains 0")
    assert t.loc["hiso", "claim at best vs decomfl"] == "better"
    assert math.isclose(t.loc["hiso", "best minus decomfl's (mean)"], 0.18)
    assert t.loc["hiso", "best minus decomfl's (95% CI low)"] > 0.15
    assert t.loc["decomfl", "claim at best vs decomfl"] == "reference"
    # the best's rounding spread is measured on the best evaluations: 0.01 for HiSo, whose final moved by 0.02
    runs, twins = split_twins(load_runs(tmp_path))
    assert math.isclose(t.loc["hiso", "rounding spread"], 0.02)
    best = rounding_spread(finals(runs, "accuracy"), finals(twins, "accuracy"), "best")
    assert math.isclose(best["hiso"][0], 0.01) and best["decomfl"] == (0.0, 1)


def write_dev_run(root, method, seed, test, dev):
    d = root / method / f"seed{seed}"
    d.mkdir(parents=True)
    pd.DataFrame([{"round": 10 * r, "train_loss": 1.0, "bytes_up": 10, "bytes_down": 5, "forward_passes": 12,
                   "wall_seconds": 0.1, "test_loss": t, "dev_loss": v} for r, (t, v) in enumerate(zip(test, dev))]
                 ).to_csv(d / "metrics.csv", index=False)
    (d / "run.json").write_text('{"status": "complete"}')


def test_the_test_metric_at_the_best_dev_round_is_chosen_on_dev_and_claimed_with_its_own_spreads(tmp_path):
    """Runs that also read a dev split (run.also_dev): each run's test loss is taken at its lowest dev loss (the
    earliest on ties), not at its lowest test loss; the table pairs it against the reference with its own
    interval and spreads, and a table of runs without a dev split has none of these columns."""
    for s in range(4):
        # DeComFL: dev lowest at round 20 (test 0.70 + s/100), its test lowest later (0.60) where dev has risen
        write_dev_run(tmp_path, "decomfl", s, [1.0, 0.9, 0.70 + s / 100, 0.60, 0.80], [1.0, 0.9, 0.5, 0.6, 0.5])
        # HiSo: dev lowest at round 10 and again at 30 (a tie: the earliest counts), test 0.50 + s/100 there
        write_dev_run(tmp_path, "hiso", s, [1.0, 0.50 + s / 100, 0.9, 0.55, 0.9], [1.0, 0.4, 0.8, 0.4, 0.9])
    write_dev_run(tmp_path, f"hiso{TWIN}", 0, [1.0, 0.52, 0.9, 0.55, 0.9], [1.0, 0.4, 0.8, 0.5, 0.9])
    per_seed = finals(split_twins(load_runs(tmp_path))[0], "test_loss", higher=False).set_index(["method", "seed"])
    assert per_seed.loc[("decomfl", 2), "at_dev"] == 0.72 and per_seed.loc[("decomfl", 2), "best"] == 0.60
    assert per_seed.loc[("hiso", 3), "at_dev"] == 0.53
    t = summarise(load_runs(tmp_path), "test_loss", 0.1).set_index("method")
    assert math.isclose(t.loc["hiso", "test_loss at best dev mean"], 0.515)
    assert math.isclose(t.loc["hiso", "at best dev minus decomfl's (mean)"], -0.2)
    assert t.loc["hiso", "at best dev minus decomfl's (95% CI high)"] < 0  # the four pairs differ by exactly 0.2
    assert math.isclose(t.loc["hiso", "test_loss at best dev rounding spread"], 0.02)  # the twin picked 0.52
    assert t.loc["hiso", "claim at best dev vs decomfl"] == "better"
    assert t.loc["hiso", "claim vs decomfl"] == "worse"  # finals 0.9 against 0.8: the last round says otherwise
    md = compact_markdown(t.reset_index(), "test_loss")
    assert "| vs decomfl at the best dev round, paired |" in " ".join(md.split()).replace("  ", " ")
    assert "better (-0.200, 95% CI -0.200 to -0.200)" in md and "0.515 ± 0.0129" in md and "early stopping" in md
    for f in tmp_path.rglob("metrics.csv"):
        pd.read_csv(f).drop(columns="dev_loss").to_csv(f, index=False)
    t = summarise(load_runs(tmp_path), "test_loss", 0.1)
    assert not [c for c in t.columns if "dev" in c]
