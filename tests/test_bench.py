"""The perf tier and benchmark scripts stay runnable (their quick parts), and what they print is what they measured.
The curvature study tier has its own file: tests/test_curvature_study.py."""
import subprocess
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_perf_tier_bytes_job_measures_the_wire_and_writes_its_page(tmp_path):
    """The perf tier sliced to its bytes job: one job, one report; the page's numbers are the job's CSV."""
    from test_workflow import SNAKEMAKE, job_counts, workflow_copy

    repo, out = workflow_copy(tmp_path), tmp_path / "out"
    readings = tmp_path / "readings.md"
    readings.write_text("HiSo sends {{bytes|method=hiso|bytes_up}} B up.\n\n"
                        "- A step costs {{step|model=tiny-llama,method=hiso,P=5,cache_directions=False|ratio}}.\n")
    p = subprocess.run([SNAKEMAKE, "--cores", "1", "--configfile", "workflows/config/perf.yaml", "--config",
                        f"results={out}", "only=[bytes]"], cwd=repo, check=True, capture_output=True, text=True,
                       env={**__import__("os").environ, "HF_HUB_OFFLINE": "1"})
    assert job_counts(p.stdout + p.stderr) == {"perf_job": 1, "perf_report": 1, "all": 1, "total": 3}
    df = pd.read_csv(out / "perf" / "bytes.csv").set_index("method")
    # vector methods: header only on top of 4*d bytes; scalar-only: 76 B up for 2 clients (headers + 20 B each)
    assert (df.loc[["fedzo", "fedavg", "fedadam"], "up_ratio"] < 1.001).all()
    assert df.loc["hiso", "bytes_up"] == df.loc["decomfl", "bytes_up"] == 2 * (18 + 5 * 4)
    page = (out / "pages" / "perf.md").read_text()
    assert "`python -m bench.perf --only bytes` (job `bytes`" in page and "| fedkseed |" in page
    assert (out / "pages" / "perf" / "bytes.csv").exists() and (out / "pages" / "perf" / "bytes.json").exists()
    # the readings as the report fills them: a block citing a job left out of the slice is dropped
    import yaml

    from bench.perf_report import page as render
    perf = yaml.safe_load((repo / "workflows" / "config" / "perf.yaml").read_text())["perf"]
    text = render(perf, out / "pages" / "perf", "c", "x", "d",
                  readings.read_text())
    assert "HiSo sends 76 B up." in text and "A step costs" not in text


def test_perf_report_placeholders_name_one_row_or_fail():
    from bench.perf_report import fill, number
    t = {"step": pd.DataFrame({"model": ["a", "a"], "P": [1, 5], "cache": [False, True], "ratio": [1.23456, 2.0]})}
    jobs = {"step": {}, "bytes": {}}
    assert fill("x {{step|model=a,P=5|ratio}}", t, jobs) == "x 2"
    assert fill("x {{step|P=1,cache=False|ratio}}", t, jobs) == "x 1.23"
    assert fill("kept\n\n- dropped {{bytes||up}}\n- kept too", t, jobs) == "kept\n\n- kept too"
    for bad, why in [("{{step|model=a|ratio}}", "2 rows"), ("{{step|P=7|ratio}}", "0 rows"),
                     ("{{step|P=1|nope}}", "no column 'nope'"), ("{{step|size=1|ratio}}", "no column 'size'"),
                     ("{{zeta|P=1|ratio}}", "not a job")]:
        with pytest.raises(KeyError, match=why):
            fill(bad, t, jobs)
    assert [number(v) for v in (134515008, 0.000123456, 1.0005, 81_234_567.8, 35296.85, 2.5e-7, True)] == \
        ["134,515,008", "0.000123", "1.00", "81,234,568", "35,297", "2.5e-07", "True"]


def test_dispatch_counts_meet_the_flat_layouts_goals_on_opt_1_3b():
    """The accelerator layout's step, counted on meta tensors of OPT-1.3B's shapes: a few hundred ops, one host sync
    per client step and per server apply, P + 1 writes of the parameters per forward-difference step."""
    from bench.perf_dispatch import bench_dispatch, count_client
    P = 5
    rows = {r["method"]: r for r in bench_dispatch(["opt-1.3b"], P=P, layouts=("flat",))}
    for r in rows.values():
        assert r["pieces_per_pass"] == 20 and r["tensors"] == 388, r
        assert r["client_ops"] <= 2000 and r["client_syncs"] <= P + 2, r
        assert r["server_ops"] <= 1000 and r["server_syncs"] <= 1, r
        assert r["passes_step"] == P + 1 and r["passes_step_update"] == P + 1 and r["server_passes"] == 1, r
        assert r["client_drawn_over_d"] == 2 * P and r["server_drawn_over_d"] == P  # each swap redraws z_{j-1}
    assert rows["hiso"]["server_syncs"] == 1 and rows["decomfl"]["server_syncs"] == 0  # the curvature check
    tensors = count_client("opt-125m", "decomfl", "tensors", P, 1)
    assert tensors["passes"] == pytest.approx(2 * P)  # perturb and restore separately (summed over 196 tensors)
    assert tensors["ops"] > 20 * count_client("opt-125m", "decomfl", "flat", P, 1)["ops"]


def test_time_model_is_the_max_of_device_and_host_plus_syncs():
    from bench.timemodel import Device, predict
    dev = Device(copy_bw=1e12, randn_per_s=1e11, launch_s=1e-5, sync_s=1e-4, fp32_flops=1e12)
    row = {"P": 5, "d": 1e9, "client_bytes_over_4d": 10, "client_drawn_over_d": 10, "client_launch": 100,
           "client_syncs": 1, "server_bytes_over_4d": 5, "server_drawn_over_d": 5, "server_launch": 10,
           "server_syncs": 1}
    p = predict(row, tokens=100, params=1e9, dev=dev)
    fwd = 2 * 1e9 * 100 / 1e12  # 0.2 s
    zo = 10 * 4e9 / 1e12 + 10 * 1e9 / 1e11  # 0.04 + 0.1
    assert p["forward_s"] == pytest.approx(fwd) and p["zo_device_s"] == pytest.approx(zo)
    assert p["step_s"] == pytest.approx(6 * fwd + zo + 1e-4) and not p["host_bound"]
    assert p["ratio"] == pytest.approx((6 * fwd + zo + 1e-4) / (6 * fwd))
    host_bound = predict({**row, "client_launch": 10**6}, tokens=100, params=1e9, dev=dev)
    assert host_bound["host_bound"] and host_bound["step_s"] == pytest.approx(10.0 + 1e-4)


def test_dispatch_counter_counts_a_host_to_device_copy_as_a_sync():
    """A label list copied onto the device on every forward is a blocking copy: the counter sees it (meta tensors
    stand in for the device), as it sees a value read back to the host."""
    import torch

    from bench.perf_dispatch import Counter
    dev = torch.empty(3, device="meta")
    with Counter(set(), 1) as c:
        torch.tensor([1, 2, 3]).to("meta")
        dev.copy_(torch.ones(3))
        dev.add_(1.0)  # on the device: no sync
    assert (c.syncs, c.h2d) == (2, 2)


def test_int8_part_quantises_only_the_frozen_base_and_compares_the_uploaded_derivative():
    """bench/perf_int8.py on a tiny random LLaMA + LoRA: the int8 copy keeps fp32 adapters and head and leaves the
    float32 model untouched; its derivative is the forward difference a client uploads; the rows are consistent."""
    import numpy as np
    import torch

    from bench import perf_int8
    over = ("task.model=tiny-llama", "task.train_size=40", "task.dev_size=10")
    rows = perf_int8.bench_int8(repeats=1, directions=4, test_size=20, overrides=over)
    assert [r["int8 weights"] for r in rows] == list(perf_int8.QCONFIGS)
    for r in rows:
        assert r["fwd_int8_s"] > 0 and r["fwd_int8_over_fp32"] == r["fwd_int8_s"] / r["fwd_fp32_s"]
        assert r["rms_over_std"] == r["derivative_rms_int8_minus_fp32"] / r["derivative_std_fp32"]
        assert 0 <= r["sign_agreement"] <= 1 and 0 <= r["accuracy_int8"] <= 1 and r["directions"] == 4
    from hiso.config import load_config
    from hiso.runner import build_federation
    _, task = build_federation(load_config(perf_int8.BASE, ["method=decomfl", "run.progress=false", "task.test_size=20",
                                                            *over]))
    before = {n: p.clone() for n, p in task.model.state_dict().items()}
    int8 = perf_int8.quantised(task.model, "per_channel_dynamic_qconfig")
    kinds = {n: type(m).__module__ for n, m in int8.named_modules()}
    assert any("quantized.dynamic" in k for n, k in kinds.items() if "mlp" in n)
    assert all("quantized" not in k for n, k in kinds.items() if "lora_" in n or n.endswith("lm_head"))
    assert all(torch.equal(before[n], p) for n, p in task.model.state_dict().items())
    assert all(p.dtype == torch.float32 for p in perf_int8._adapters(int8))
    batch = task.batch(0, np.random.default_rng(0), 4)
    u = [torch.ones_like(p) for p in perf_int8._adapters(task.model)]
    by_hand = (float(torch.nn.functional.cross_entropy(_shifted(task, u, 0.01)(batch), batch["labels"]))
               - task.loss(batch)) / 0.01
    assert perf_int8.derivative(task, task.model, batch, u, 0.01) == pytest.approx(by_hand, rel=1e-6)
    assert all(torch.equal(before[n], p) for n, p in task.model.state_dict().items())  # restored exactly


def _shifted(task, directions, mu):
    """The task's label logits with its adapters moved by mu * u, on a copy of the model."""
    import copy

    from bench.perf_int8 import _adapters
    model = copy.deepcopy(task.model)
    for p, u in zip(_adapters(model), directions):
        p.data += mu * u

    def logits(batch):
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                    position_ids=batch["position_ids"], logits_to_keep=1)
        return out.logits[:, -1, task.label_ids].float()
    return logits


def test_the_perf_tier_schema_names_every_part_the_command_line_runs():
    import yaml

    from bench.perf import PARTS
    schema = yaml.safe_load((ROOT / "workflows" / "schemas" / "config.schema.yaml").read_text())
    jobs = schema["properties"]["perf"]["properties"]["jobs"]["additionalProperties"]
    assert sorted(jobs["properties"]["part"]["enum"]) == sorted(PARTS)
