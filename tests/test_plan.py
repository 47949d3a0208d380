"""Every planned run of every tier loads as a valid config before any job starts; the paper tier tunes every
ZO cell and its cluster plan submits only runs, with per-model resources."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from hiso import plan
from hiso.config import load_config
from hiso.scan import choose_lr

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")
TIERS = sorted(p.stem for p in (ROOT / "workflows" / "config").glob("*.yaml"))  # the shipped ones and a user's
# the shipped tiers and the runs each plans (the curvature and perf tiers have no experiments: their jobs are the
# study's and the perf parts: tests/test_curvature_study.py, tests/test_bench.py); a tier a user adds is validated below, never counted
SHIPPED = {"ablations": 696, "curvature": 0, "default": 84, "deploy": 4, "lm": 51, "paper": 1232, "perf": 0,
           "smoke": 17, "zo_signsgd": 27}
ZO = {"decomfl", "hiso", "fedzo", "fedkseed", "mezo"}


def tier(name):
    return yaml.safe_load((ROOT / "workflows" / "config" / f"{name}.yaml").read_text())


def planned_configs(name):
    """(experiment, method, seed, Config) of every run the tier plans, loaded as the run rule would."""
    cfg = tier(name)
    return plan.run_configs(cfg, plan.experiments(cfg), ROOT)


def test_the_shipped_tiers_plan_their_runs():
    counts = {t: sum(1 for _ in planned_configs(t)) for t in SHIPPED}
    assert counts == SHIPPED, counts


@pytest.mark.parametrize("name", TIERS)
def test_every_tier_in_the_config_folder_plans_valid_runs(name):
    """Every yaml under workflows/config/ (a user's own tier too): the schema, the experiments and every planned
    run's config, with what is wrong and where."""
    from hiso.checks import ConfigError
    path = ROOT / "workflows" / "config" / f"{name}.yaml"
    cfg = tier(name)
    assert isinstance(cfg, dict), f"{path}: a tier is a mapping of keys (results, seeds, experiments, ...)"
    from snakemake.utils import validate
    try:
        validate(dict(cfg), str(ROOT / "workflows" / "schemas" / "config.schema.yaml"))
    except Exception as e:  # noqa: BLE001 - snakemake wraps jsonschema's errors
        pytest.fail(f"{path}: {e}")
    try:
        runs = list(planned_configs(name))
    except (ConfigError, KeyError, ValueError, TypeError) as e:
        pytest.fail(f"{path}: {type(e).__name__}: {e}")
    experiments = plan.experiments(cfg)
    assert runs or not experiments, f"{path}: its experiments plan no run"


def test_a_task_the_registry_lacks_fails_at_plan_time(tmp_path):
    cfg = tier("paper")
    cfg["grids"]["decomfl"]["tasks"]["wsc.fixed"] = cfg["grids"]["decomfl"]["tasks"].pop("wsc")
    bad = tmp_path / "paper.yaml"
    bad.write_text(yaml.safe_dump(cfg))
    p = subprocess.run([SNAKEMAKE, "-n", "--configfile", str(bad), "--config", f"results={tmp_path}"], cwd=ROOT,
                       capture_output=True, text=True)
    assert p.returncode != 0 and "task.name: 'wsc.fixed' is not a registered task" in p.stdout + p.stderr


def test_paper_tier_tunes_every_zo_cell_and_labels_equal_lr_rows():
    cfg = tier("paper")
    for exp, spec in plan.experiments(cfg).items():
        for method, sets in spec["methods"].items():
            if method in spec.get("tuning_only", []):
                continue
            family = (sets or {}).get("method")
            source = plan.lr_source(spec, method)
            assert source is not None, f"{exp}/{method} reports at an untuned step size"
            if method.endswith("-equal-lr"):
                assert source == "decomfl"
            else:
                assert source == method and family in ZO | {"fedavg", "fedadam", "fedyogi", "fedadagrad"}
                assert len(spec["choices"][method]) >= 4


def test_rounds_budgets_cover_every_reported_cell():
    """Each HiSo/DeComFL communication cell implies rounds = bytes / (8 P B per round); the budget of the
    experiment that regenerates it is at least that."""
    rep = pd.read_csv(ROOT / "paper_results" / "reported.csv")
    exps = plan.experiments(tier("paper"))
    unplanned = set()
    for _, r in rep[rep["implied rounds"].notna()].iterrows():
        grid = "hiso" if r.source.startswith("HiSo") else "decomfl"
        if f"{grid}-{r.model}-{r.task}" not in exps:
            unplanned.add(r.source)
            continue
        spec = exps[f"{grid}-{r.model}-{r.task}"]
        cfg = load_config(ROOT / spec["base"], [plan.assignment(k, v) for k, v in
                                                 plan.run_sets(tier("paper"), spec, r.method).items()])
        assert cfg.federation.rounds >= r["implied rounds"], (r.source, r.model, r.task, r.method)
    assert unplanned == {"DeComFL LoRA table"}  # the one table the paper tier does not regenerate (side by side: empty)


def test_choose_lr_picks_fewest_rounds_then_best_final_and_never_a_diverged_run(tmp_path):
    def fake(name, accs, status="complete"):
        d = tmp_path / name / "seed100"
        d.mkdir(parents=True)
        rows = [{"round": 10 * (i + 1), "accuracy": a, "bytes_up": 1, "bytes_down": 1, "forward_passes": 6,
                 "wall_seconds": 1.0, "train_loss": 1.0} for i, a in enumerate(accs)]
        pd.DataFrame(rows).to_csv(d / "metrics.csv", index=False)
        (d / "run.json").write_text(json.dumps({"status": status}))
        return d / "metrics.csv"
    paths = [fake("hiso@1e-05", [0.5, 0.6, 0.7]), fake("hiso@3e-05", [0.6, 0.8, 0.81]),
             fake("hiso@0.0001", [0.7, 0.8, 0.9]), fake("hiso@0.0003", [0.9, 0.95], "diverged")]
    choice = choose_lr(paths, "accuracy", 0.8)
    assert choice["sets"] == {"federation.lr": 1e-4} and choice["at_grid_edge"] is False
    assert len(choice["grid"]) == 4


def test_set_file_applies_the_chosen_step_size(tmp_path):
    from hiso.__main__ import _file_sets
    f = tmp_path / "choice.json"
    f.write_text(json.dumps({"sets": {"federation.lr": 3e-06}, "method": "hiso@3e-06"}))
    cfg = load_config(data={"task": {"name": "quadratic"}}, overrides=_file_sets([str(f)]))
    assert cfg.federation.lr == 3e-06


def test_slurm_profile_plans_only_run_jobs_remotely_with_per_model_resources(tmp_path):
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "sbatch").write_text("#!/bin/sh\necho sbatch-was-called >&2\nexit 1\n")
    (fake / "sbatch").chmod(0o755)
    env = {**os.environ, "PATH": f"{fake}:{os.environ['PATH']}", "HF_HUB_OFFLINE": "1"}
    p = subprocess.run([SNAKEMAKE, "-n", "--profile", "workflows/profiles/slurm", "--configfile",
                        "workflows/config/paper.yaml", "--config", f"results={tmp_path / 'r'}"], cwd=ROOT, env=env,
                       capture_output=True, text=True, check=True)
    assert "sbatch-was-called" not in p.stdout + p.stderr
    jobs = re.findall(r"^rule (\w+):\n(?:.*\n)*?\s+wildcards: exp=([^,]+), .*\n\s+resources: (.*)", p.stdout, re.M)
    runs = [(exp, res) for rule, exp, res in jobs if rule == "run"]
    assert len(runs) == 1232
    for exp, res in runs:
        model = next(m for m in ("opt-125m", "opt-350m", "opt-1.3b", "opt-2.7b", "llama-3.2-1b", "llama-3.2-3b")
                     if f"-{m}-" in exp)
        want = tier("paper")["grids"]["hiso"]["resources"][model]
        assert f"mem_mb={want['mem_mb']}," in res and f"runtime={want['runtime']}," in res, (exp, res)
        assert "gpu=1" in res and "slurm_partition=gpu" in res
    # every other rule of the workflow runs where snakemake runs
    rules = subprocess.run([SNAKEMAKE, "--list-rules", "--configfile", "workflows/config/paper.yaml"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.split()
    local = re.search(r"^localrules: (.*)$", (ROOT / "Snakefile").read_text(), re.M).group(1)
    # (perf jobs are submitted too: they measure the node they land on)
    assert set(rules) - {r.strip() for r in local.split(",")} == {"run", "scan_lr", "study_tune", "study_eval", "perf_job"}


def test_committed_budget_page_is_what_its_script_writes(tmp_path):
    out = tmp_path / "budget.md"
    subprocess.run([sys.executable, "workflows/scripts/plan_budget.py", "--configfile", "workflows/config/paper.yaml",
                    "--md", str(out)], cwd=ROOT, check=True, capture_output=True)
    assert out.read_text() == (ROOT / "docs" / "paper-budget.md").read_text(), \
        "docs/paper-budget.md is stale: rerun the command at its top"


def test_a_measured_gpu_check_replaces_the_time_model(tmp_path):
    """With --measured, forward times and step ratios come from bench/gpu_check.py's JSON: doubling every measured
    forward time doubles every run's hours, and the page names the measurement."""
    def hours(forward_s: float) -> tuple[float, str]:
        models = {m: {"forward_s": forward_s, "decomfl_flat_step_over_P1_forwards": 1.3,
                      "hiso_flat_step_over_P1_forwards": 1.6, "decomfl_flat_replay_round_s": 0.0,
                      "hiso_flat_replay_round_s": 0.0}
                  for m in ("opt-125m", "opt-350m", "opt-1.3b", "opt-2.7b", "llama-3.2-1b", "llama-3.2-3b")}
        path = tmp_path / f"gpu{forward_s}.json"
        path.write_text(json.dumps({"batch": 32, "seq": 32, "models": models}))
        text = subprocess.run([sys.executable, "workflows/scripts/plan_budget.py", "--configfile",
                               "workflows/config/paper.yaml", "--measured", str(path)], cwd=ROOT, check=True,
                              capture_output=True, text=True).stdout
        total = re.search(r"\| \*\*all\*\* \| \| \| \*\*\d+\*\* \| \*\*([\d.]+)\*\*", text)
        return float(total.group(1)), text
    one, text = hours(0.01)
    two, _ = hours(0.02)
    assert "measured forward times and step ratios from" in text
    assert two == pytest.approx(2 * one, rel=0.01)


def test_no_reported_cell_outlasts_its_runtime_and_retries():
    """The budget page lists the runs predicted to outlast one job's runtime with their resume cadence; each must
    finish within 1 + retries jobs (the page is regenerated and compared by the test above)."""
    page = (ROOT / "docs" / "paper-budget.md").read_text()
    assert "outlast one job's `runtime`" in page or "Every reported run fits" in page
    assert "need more jobs than their retries allow" not in page


@pytest.mark.parametrize("model", ["opt-125m", "opt-1.3b"])
def test_the_memory_model_counts_the_parameters_a_model_really_has(model):
    """bench/memmodel.py's N and LoRA d against the model built from its config (on the meta device) and peft."""
    import peft
    import torch
    import transformers

    from bench import memmodel
    from hiso import perturb
    assert memmodel.FLAT_CHUNK == perturb.FLAT_CHUNK
    cfg = transformers.OPTConfig(**json.loads((ROOT / "bench" / "model_configs" / f"{model}.json").read_text()))
    with torch.device("meta"):
        m = transformers.OPTForCausalLM(cfg)
    shape = memmodel.SHAPES[model]
    assert sum(p.numel() for p in m.parameters()) == pytest.approx(shape.params, rel=0.01)
    lora = peft.get_peft_model(m, peft.LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"]))
    assert sum(p.numel() for p in lora.parameters() if p.requires_grad) == memmodel.trainable(shape, lora=True)
    # the budget page names the cells that cannot fit an 80 GB card: the adaptive first-order servers on
    # OPT-2.7B SQuAD keep 5 d of state and the backward pass's activations
    page = (ROOT / "docs" / "paper-budget.md").read_text()
    assert "Predicted peak GPU memory per model x method" in page
    assert "opt-2.7b fedadam on squad" in page and "opt-2.7b hiso on squad" not in page


def test_the_time_model_counts_the_forwards_real_flops_and_names_its_constant_set(tmp_path):
    """logits_to_keep=1: the embeddings are look-ups and the head runs at one position, so OPT-125M's forward is
    about 1/1.47 of 2 N tokens; the budget page names the constant set it used (H200 by default, or H100)."""
    from bench import timemodel
    sys.path.insert(0, str(ROOT / "workflows" / "scripts"))
    import plan_budget
    tokens = 32 * 25
    full = 2 * plan_budget.PARAMS["opt-125m"] * tokens
    assert 1.4 < full / plan_budget.flops_of("opt-125m", tokens, 32) < 1.5
    assert 1.05 < 2 * plan_budget.PARAMS["opt-1.3b"] * tokens / plan_budget.flops_of("opt-1.3b", tokens, 32) < 1.1
    assert timemodel.DEVICES["h100"].copy_bw < timemodel.DEVICES["h200"].copy_bw
    out = tmp_path / "h100.md"
    subprocess.run([sys.executable, "workflows/scripts/plan_budget.py", "--configfile", "workflows/config/paper.yaml",
                    "--device", "h100", "--md", str(out)], cwd=ROOT, check=True, capture_output=True)
    text = out.read_text()
    assert "with the H100 SXM (stated constants) set (--device h100" in text
    row = next(line for line in text.splitlines() if line.startswith("| opt-1.3b | hiso     | flat"))
    assert 1.55 < float(row.split("|")[7]) < 1.75  # HiSo on OPT-1.3B, flat: ~1.65 (H200: ~1.49)
    assert "with the H200 (stated constants) set" in (ROOT / "docs" / "paper-budget.md").read_text()


def test_a_method_s_own_seeds_and_its_rounding_twin():
    cfg = {"seeds": [0, 1, 2, 3, 4], "experiments": {"e": {
        "base": "workflows/config/base/quadratic.yaml", "metric": "rel_suboptimality", "target": 0.1,
        "methods": {"hiso": {"method": "hiso"}, "fedzo": {"method": "fedzo", "seeds": [0, 1, 2]}},
        "rounding": [0]}}}
    spec = plan.experiments(cfg)["e"]
    runs = plan.runs_of(cfg, spec)
    assert [s for m, s in runs if m == "hiso"] == [0, 1, 2, 3, 4]
    assert [s for m, s in runs if m == "fedzo"] == [0, 1, 2]
    assert [s for m, s in runs if m.endswith("+ulp")] == [0, 0]
    assert "seeds" not in plan.run_sets(cfg, spec, "fedzo", 0)  # a meta key, never a config key
    cfg["experiments"]["e"]["rounding"] = [3]
    with pytest.raises(ValueError, match="fedzo"):
        plan.experiments(cfg)
    cfg["experiments"]["e"]["rounding"] = [0, 1, 3]
    # a method's own rounding: replaces the experiment's (a costly method twinned on fewer seeds, or none)
    cfg["experiments"]["e"]["methods"]["fedzo"]["rounding"] = [1]
    runs = plan.runs_of(cfg, plan.experiments(cfg)["e"])
    assert [s for m, s in runs if m == "hiso+ulp"] == [0, 1, 3] and [s for m, s in runs if m == "fedzo+ulp"] == [1]
    assert "rounding" not in plan.run_sets(cfg, plan.experiments(cfg)["e"], "fedzo", 0)
    cfg["experiments"]["e"]["methods"]["fedzo"]["rounding"] = False
    assert "fedzo+ulp" not in plan.experiments(cfg)["e"]["methods"]
    cfg["experiments"]["e"]["methods"]["fedzo"]["rounding"] = [4]  # not one of fedzo's seeds: named, refused
    with pytest.raises(ValueError, match=r"method fedzo: rounding: \[4\]: seeds \[4\] are not reported seeds"):
        plan.experiments(cfg)
    del cfg["experiments"]["e"]["methods"]["fedzo"]["rounding"]
    cfg["experiments"]["e"]["rounding"] = [0]
    cfg["experiments"]["e"]["methods"]["fedzo"]["seeds"] = [0, -1]
    with pytest.raises(ValueError, match="seeds"):
        plan.runs_of(cfg, plan.experiments(cfg)["e"])


def test_labels_never_show_a_yaml_key_where_a_label_can_be_had():
    from hiso.labels import labels
    cfg = {"seeds": [0], "experiments": {"e": {
        "base": "workflows/config/base/digits.yaml", "metric": "accuracy", "target": 0.5,
        "methods": {"decomfl": {"method": "decomfl"}, "hiso": {"method": "hiso", "label": "HiSo (ours)", "color": "k"},
                    "hiso-b0.90": {"method": "hiso", "curvature.beta": 0.9, "federation.lr": 0.03},
                    "oracle": {"method": "hiso", "curvature.kind": "oracle"}},
        "lr_grid": {"decomfl": [0.01, 0.03]}, "rounding": [0]}}}
    spec = plan.experiments(cfg)["e"]
    got = {m: v["label"] for m, v in labels(spec).items()}
    assert got["decomfl@0.01"] == "DeComFL (lr 0.01)" and got["hiso"] == "HiSo (ours)"
    assert got["hiso-b0.90"] == "HiSo (beta 0.9, lr 0.03)" and got["oracle"] == "true H"
    assert got["hiso+ulp"] == "HiSo (ours) (+1 ulp)" and labels(spec)["hiso+ulp"]["color"] == "k"
    assert "label" not in plan.run_sets(cfg, spec, "hiso", 0) and "color" not in plan.run_sets(cfg, spec, "hiso", 0)


def test_a_methods_slice_keeps_the_matching_methods_with_their_tuning_and_twins():
    """`methods: [pattern, ...]` on the lm tier: HiSo and DeComFL keep their scans, 5 seeds and rounding twins; the
    other methods, their scans and their twins are gone; a slice that keeps a method but not the one whose step
    size it reads (lr_from), or matches nothing, is refused before anything runs."""
    cfg = {**tier("lm"), "methods": ["hiso", "deco*"]}
    (spec,) = plan.experiments(cfg).values()
    assert sorted(spec["methods"]) == ["decomfl", "decomfl+ulp", "hiso", "hiso+ulp"]
    assert sorted(spec["scans"]) == sorted(spec["choices"]) == ["decomfl", "hiso"]
    assert sorted(plan.runs_of(cfg, spec)) == sorted([(m, s) for m in ("decomfl", "hiso") for s in range(5)]
                                                     + [(m, s) for m in ("decomfl+ulp", "hiso+ulp") for s in (0, 1)])
    full = {n: sorted(s["methods"]) for n, s in plan.experiments(tier("default")).items()}
    sliced = {n: sorted(s["methods"]) for n, s in plan.experiments({**tier("default"), "methods": ["hiso*"]}).items()}
    assert sliced and all(m.startswith("hiso") for ms in sliced.values() for m in ms)
    assert all(set(ms) <= set(full[n]) for n, ms in sliced.items())
    with pytest.raises(ValueError, match=r"matches no method"):
        plan.experiments({**tier("lm"), "methods": ["nothing"]})
    lr_from = {**tier("lm"), "experiments": {"e": {**tier("lm")["experiments"]["lm-rotten-tomatoes"],
                                                   "methods": {"decomfl": {"method": "decomfl"},
                                                               "hiso": {"method": "hiso", "lr_from": "decomfl"}},
                                                   "scan": {"decomfl": [0.01, 0.02]}}}}
    assert "hiso" in plan.experiments(lr_from)["e"]["methods"]
    with pytest.raises(ValueError, match=r"keeps hiso of experiment e but not decomfl"):
        plan.experiments({**lr_from, "methods": ["hiso"]})


def test_the_lm_tiers_reported_runs_also_read_dev_and_its_tuning_runs_do_not():
    """common_sets turns run.also_dev on; a tuning run evaluates on dev already, so plan turns it off there (the
    combination is refused), and its config stays what it was before the option existed."""
    cfg = tier("lm")
    (spec,) = plan.experiments(cfg).values()
    assert plan.run_sets(cfg, spec, "hiso", 0)["run.also_dev"] is True
    tuning = plan.run_sets(cfg, spec, "hiso", tuning=True)
    assert tuning["run.also_dev"] is False and tuning["run.eval_split"] == "dev"
