"""What "scalar-only" buys once a real framework carries it: bytes at every layer and time per round, measured on
a Flower deployment on 127.0.0.1 (SuperLink + 3 SuperNodes, 2 clients sampled per round, P = 5, tau = 1).

Layers, per round (both directions, the 2 sampled clients together):
  (a) payload in the papers' convention: the scalars (4 B each) up, and as many aggregated scalars down;
      for FedAvg/FedZO the d floats of the model down and of the update up;
  (b) hiso/protocol.py messages with their headers (seeds, catch-up records): what the simulator counts;
  (c) Flower's serialised messages (Message + RecordDict protobuf), as the ServerApp sends and receives them;
  (d) TCP bytes between the SuperNodes and the SuperLink through a counting proxy, in the round's window,
      minus the idle polling rate (measured before the run with the SuperNodes connected and idle).
FedAvg/FedZO rows come from hiso/flower/probe.py: their d-sized messages over the same transport, no training.

    python -m bench.flower_bytes --out docs/results/deployment.md    # about 10-15 minutes on 2 cores
"""
from __future__ import annotations

import argparse
import datetime
import json
import logging
import math
import tempfile
from pathlib import Path

import pandas as pd

from hiso.config import load_config
from hiso.flower.deploy import deploy
from hiso.gitinfo import commit

ROOT = Path(__file__).resolve().parents[1]
FED = {"num_clients": 3, "clients_per_round": 2, "perturbations": 5, "local_steps": 1, "engine": "flower",
       "round_timeout": 300.0}
PROBLEMS = {
    "quadratic d=1000": {"task": {"name": "quadratic", "dim": 1000, "spectrum": "power", "effective_rank": 10.0},
                         "federation": {**FED, "lr": 0.03}},
    "SmolLM2-135M LoRA (460,800 trainable)": {
        "task": {"name": "rotten_tomatoes", "model": "smollm2-135m-instruct", "trainable": "lora", "lora_rank": 8,
                 "lora_targets": "q_proj,v_proj", "train_size": 200, "dev_size": 20, "test_size": 20,
                 "max_length": 64, "eval_batch_size": 20},
        "federation": {**FED, "lr": 1e-2, "mu": 1e-2, "batch_size": 16}},
}
METHODS = {"HiSo": ("hiso", "hiso.flower.app"), "DeComFL": ("decomfl", "hiso.flower.app"),
           "FedAvg / FedZO (d floats each way, transport only)": ("decomfl", "hiso.flower.probe")}


def tcp_in_window(tcp: pd.DataFrame, start: float, seconds: float) -> float:
    """Bytes (both directions) in [start, start + seconds), spreading each second's count over the second."""
    end, total = start + seconds, 0.0
    for s, up, down in tcp[["unix_second", "tcp_bytes_up", "tcp_bytes_down"]].itertuples(index=False):
        overlap = max(0.0, min(end, s + 1) - max(start, s))
        total += overlap * (up + down)
    return total


def measure(problem: str, method: str, rounds: int, work: Path) -> dict:
    name, module = METHODS[method]
    spec = PROBLEMS[problem]
    cfg = load_config(data={"method": name, "seed": 0, "task": spec["task"],
                            "federation": {**spec["federation"], "rounds": rounds},
                            "run": {"eval_every": rounds, "checkpoint_every": 0, "progress": False, "threads": 1}})
    out = work / f"{problem}-{method}".replace(" ", "_").replace("/", "_")
    deploy(cfg, out, idle_probe=20.0, module=module)
    m = pd.read_csv(out / "metrics.csv")
    tcp = pd.read_csv(out / "flower" / "tcp_per_second.csv")
    idle = json.loads((out / "flower" / "tcp_idle.json").read_text())
    idle_rate = (idle["up"] + idle["down"]) / idle["seconds"]
    m["tcp"] = [tcp_in_window(tcp, s, d) for s, d in zip(m["exchange_started_at"], m["exchange_seconds"])]
    m["tcp_minus_idle"] = m["tcp"] - idle_rate * m["exchange_seconds"]
    probe = module.endswith("probe")
    payload = (2 * m["array_bytes"] * m["answered"]) if probe else 2 * m["bytes_up_scalars"]
    row = {"problem": problem, "method": method, "rounds": len(m),
           "(a) payload B/round": payload.median(),
           "(b) protocol.py B/round": math.nan if probe else (m["bytes_up"] + m["bytes_down"]).median(),
           "(c) Flower messages B/round": (m["flower_bytes_up"] + m["flower_bytes_down"]).median(),
           "(d) TCP B/round": m["tcp"].median(), "(d) TCP minus idle B/round": m["tcp_minus_idle"].median(),
           "idle polling B/s (3 SuperNodes)": idle_rate, "s/round": m["exchange_seconds"].median()}
    if not probe:
        for k in ("start", "load", "compute", "save"):
            row[f"client {k} s"] = m[f"client_{k}_seconds"].median()
    return row


def figure(df: pd.DataFrame, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    layers = ["(a) payload B/round", "(b) protocol.py B/round", "(c) Flower messages B/round", "(d) TCP B/round"]
    fig, axes = plt.subplots(1, df.problem.nunique(), figsize=(6 * df.problem.nunique(), 4), squeeze=False)
    for ax, (problem, sub) in zip(axes[0], df.groupby("problem", sort=False)):
        width = 0.8 / len(sub)
        for i, (_, r) in enumerate(sub.iterrows()):
            vals = [r[k] for k in layers]
            ax.bar([j + i * width for j in range(len(layers))], vals, width, label=r["method"])
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(layers))], ["payload", "protocol", "Flower", "TCP"])
        ax.set_yscale("log")
        ax.set_ylabel("bytes per round (2 clients, both directions)")
        ax.set_title(problem, fontsize=10)
        ax.legend(fontsize=7)
    fig.suptitle("median over rounds; TCP includes the SuperNodes' polling", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--out", default="docs/results/deployment.md")
    ap.add_argument("--only", default=None, help="problems whose name contains this text")
    args = ap.parse_args()
    logging.disable(logging.WARNING)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for problem in PROBLEMS:
            if args.only and args.only not in problem:
                continue
            for method in METHODS:
                rows.append(measure(problem, method, args.rounds, Path(tmp)))
                print(rows[-1], flush=True)
    df = pd.DataFrame(rows)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    stem = out.with_suffix("")
    stem.mkdir(exist_ok=True)
    df.to_csv(stem / "bytes.csv", index=False)
    figure(df, stem / "bytes.png")
    sha = commit(ROOT)
    bytes_cols = ["problem", "method"] + [c for c in df.columns if c.startswith("(")]
    time_cols = ["problem", "method", "s/round", "idle polling B/s (3 SuperNodes)"] + \
        [c for c in df.columns if c.startswith("client ")]
    text = (f"# Bytes and time per round on a Flower deployment\n\n"
            f"Generated by `python -m bench.flower_bytes --rounds {args.rounds} --out {args.out}` at commit {sha} on "
            f"{datetime.date.today().isoformat()} (3 SuperNodes on 127.0.0.1, 2 clients sampled per round, P = 5, "
            f"tau = 1; medians over {args.rounds} rounds). Layers: see `bench/flower_bytes.py`. FedAvg / FedZO rows "
            f"carry d float32 each way per client without training (hiso/flower/probe.py).\n\n"
            f"![bytes per layer]({stem.name}/bytes.png)\n\n## Bytes per round\n\n"
            f"{df[bytes_cols].to_markdown(index=False, floatfmt='.4g')}\n\n## Time per round\n\n"
            f"`s/round`: the ServerApp's send-and-receive of one round; `client start`: the ClientApp process's age "
            f"when its handler began (process start and imports), `load`: state load and task build, `compute`: "
            f"catch-up and the local step, `save`: state save (the slowest client of the round). The remainder is "
            f"the SuperNodes' polling and the transport.\n\n{df[time_cols].to_markdown(index=False, floatfmt='.3g')}\n")
    out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
