"""A GPU time model of a ZO client step, from the dispatch counts and stated device constants.

The counts (bench/perf_dispatch.py, the perf tier's `dispatch` job: docs/results/perf/dispatch.csv) say, per client
step and per server apply, how many kernels the host launches, how many times it waits for the device, how many
bytes those kernels move and how many Gaussian entries they draw.  With the constants below:

  T_fwd    = (2 (N - E) tokens + 2 H sequences) / fp32 matmul rate (one forward pass of the batch: the embeddings
                                                                   E are look-ups, and logits_to_keep=1 applies the
                                                                   head's H = vocab x width weights at one position)
  T_device = (P + 1) T_fwd + bytes / copy bandwidth + drawn / randn rate
  T_host   = launched kernels x launch cost                        (the forward's own launches are not counted)
  T_step   = max(T_device, T_host) + syncs x sync cost             (the host runs ahead of the device until a sync)

and the ratio T_step / ((P + 1) T_fwd) is what a step costs over its forward passes.  A model without a row of its
own takes the row of the nearest parameter count, with bytes and draws per parameter unchanged and launches scaled
by its number of pieces (flat) or parameters (tensors).  `bench/gpu_check.py` measures the real ratio on a GPU;
workflows/scripts/plan_budget.py uses the prediction until it is given that measurement (--measured).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd

DISPATCH = Path(__file__).resolve().parents[1] / "docs" / "results" / "perf" / "dispatch.csv"


@dataclass(frozen=True)
class Device:
    name: str = "H200 (stated constants)"
    copy_bw: float = 4.3e12  # bytes/s a copy kernel sustains (about 90 % of HBM3e's 4.8 TB/s)
    randn_per_s: float = 5e11  # N(0, 1) fp32 entries/s of torch's normal_ (about 2.6 ms per 1.3 G values)
    launch_s: float = 5e-6  # host time per launched op in eager PyTorch
    sync_s: float = 10e-6  # a device-to-host read: the queue drains, then a round trip
    fp32_flops: float = 50e12  # sustained strict-fp32 matmul rate (TF32 is not enabled by the suite)


H200 = Device()
# H100 SXM: HBM3 at 3.35 TB/s (a copy kernel sustains about 3.0), 132 SMs, the same GH100 fp32 units as the H200;
# normal_ scaled from the H200's by memory bandwidth
H100 = Device(name="H100 SXM (stated constants)", copy_bw=3.0e12, randn_per_s=3.5e11)
DEVICES = {"h100": H100, "h200": H200}


def forward_flops(params: float, embedding: float, head: float, tokens: int, sequences: int) -> float:
    """FLOPs of one forward pass of `sequences` prompts with `tokens` tokens in all: 2 FLOPs per weight and token
    outside the embeddings (look-ups, no FLOPs), plus the head's weights at the last position only
    (logits_to_keep=1)."""
    return 2 * (params - embedding) * tokens + 2 * head * sequences


def load(path: Path | str = DISPATCH) -> pd.DataFrame:
    return pd.read_csv(path)


def row_for(dispatch: pd.DataFrame, params: float, method: str, layout: str) -> dict:
    """The dispatch row of the nearest model size for this method and layout, scaled to `params` parameters."""
    rows = dispatch[(dispatch["method"] == method) & (dispatch["layout"] == layout)]
    if rows.empty:
        raise KeyError(f"no dispatch row for method {method!r} on layout {layout!r}")
    r = rows.iloc[(rows["d"] - params).abs().argsort().iloc[0]].to_dict()
    if r["d"] != params:
        scale = (math.ceil(params / r["chunk"]) / r["pieces_per_pass"]) if layout == "flat" else params / r["d"]
        for k in ("client_launch", "server_launch"):
            r[k] = r[k] * scale
        r["d"] = params
    return r


def predict(row: dict, tokens: int, params: float, dev: Device = H200, flops: float | None = None) -> dict:
    """Seconds of one client step and one server apply, and the step's ratio over its (P + 1) forward passes
    (`flops`: of one forward pass, forward_flops; default 2 params tokens)."""
    P, d = int(row["P"]), row["d"]
    t_fwd = (2 * params * tokens if flops is None else flops) / dev.fp32_flops
    zo_device = row["client_bytes_over_4d"] * 4 * d / dev.copy_bw + row["client_drawn_over_d"] * d / dev.randn_per_s
    device = (P + 1) * t_fwd + zo_device
    host = row["client_launch"] * dev.launch_s
    step = max(device, host) + row["client_syncs"] * dev.sync_s
    server = (max(row["server_bytes_over_4d"] * 4 * d / dev.copy_bw + row["server_drawn_over_d"] * d / dev.randn_per_s,
                  row["server_launch"] * dev.launch_s) + row["server_syncs"] * dev.sync_s)
    return {"forward_s": t_fwd, "step_s": step, "zo_device_s": zo_device, "host_s": host, "server_apply_s": server,
            "ratio": step / ((P + 1) * t_fwd), "host_bound": host > device}


def ratio_table(dispatch: pd.DataFrame, models: dict[str, float], tokens: int, dev: Device = H200,
                flops: dict[str, float] | None = None) -> pd.DataFrame:
    rows = []
    for model, params in models.items():
        for method in ("decomfl", "hiso"):
            for layout in ("tensors", "flat"):
                p = predict(row_for(dispatch, params, method, layout), tokens, params, dev, (flops or {}).get(model))
                rows.append({"model": model, "method": method, "layout": layout, "forward_ms": 1e3 * p["forward_s"],
                             "zo_device_ms": 1e3 * p["zo_device_s"], "host_ms": 1e3 * p["host_s"],
                             "step_over_P1_forwards": p["ratio"], "host_bound": p["host_bound"]})
    return pd.DataFrame(rows)


def constants(dev: Device = H200) -> dict:
    return asdict(dev)
