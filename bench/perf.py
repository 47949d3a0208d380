"""Performance against physical limits.  Every number is a ratio measured side by side in one
process (median of --repeats), because these machines are noisy.

  step      client step time / ((P+1) * T_fwd), HiSo and DeComFL, P = 1 and 5, forward difference, with and
            without cached directions; T_fwd measured on the same batch in the same process.
  memory    one client's peak RSS during HiSo / DeComFL local steps and catch-up replay minus the peak of one
            plain forward pass (both above the loaded model, from a reset of the kernel's peak-RSS counter),
            in units of the fp32 trainable bytes; each configuration in a fresh subprocess.
  clients   peak RSS and seconds per round with 2, 10, 100 clients (2 sampled), tiny LM full-parameter.
  replay    seconds per replayed round (apply_record: P directions regenerated, no forward pass) over the time
            to regenerate P directions of size d.
  bound     what bounds a client step: T_fwd, T_draw (one N(0, I_d) draw over all trainable tensors, in
            pieces) and T_axpy (one x += a z pass), interleaved; the floor ratio of a forward-difference step,
            ((P+1) T_fwd + k P (T_draw + T_axpy)) / ((P+1) T_fwd), for k = 1 (each direction drawn once: the
            least any Gaussian ZO step can do) and k = 2 (perturb + regenerate-to-restore, a tau = 1 client).
  profile   torch.profiler over HiSo and DeComFL catch-up replays (d = 10M, P = 5): CPU time per aten op, i.e.
            where a replay's time goes beyond regenerating the directions.
  chunk     seconds of one HiSo replay (apply_record) and of one forward-difference perturb/restore pass on a
            10M-entry tensor with directions drawn in pieces of 2^14 .. 2^22 entries, over whole-tensor draws
            (the piece size bounds the scratch memory; it must not cost time).
  dispatch  aten ops, kernel launches, host syncs, passes over the parameters and scratch bytes of one client step
            and one server apply, counted on the meta-device shapes of OPT-125M / 1.3B / 2.7B (full parameters, P = 5,
            forward differences) for HiSo and DeComFL on both layouts (bench/perf_dispatch.py): what a step asks of
            the host, whatever the device.
  portable  the portable generator's CPU cost per entry over torch's normal_, alternated, per piece size.
  numerics  each tier's kernels under the portable CPU numerics over the native ones (bench/perf_numerics.py):
            the LM's linear-layer product (the pinned OpenBLAS kernel under portable, hiso/blas.py) and the same
            product on torch's MKL sgemm, the digits CNN, short quadratic and digits runs, a SmolLM2 + LoRA
            forward; fresh processes per mode, alternated, and whether both modes computed the same bits.
  lmround   the lm tier's federated round over its clients x (P + 1) forward passes, and the forward's FLOP
            rate over a float32 product of the model's MLP shape on the kernel its linear layers use, timed
            alternately (bench/perf_lm.py).
  frozen    a bfloat16 frozen base against float32 for LoRA on SmolLM2 (bench/perf_frozen.py): test loss and
            accuracy after --rounds rounds over two seeds, and seconds per round, runs alternated.
  int8      an int8 frozen base (dynamic quantisation) against float32 for LoRA on SmolLM2 (bench/perf_int8.py):
            forward time, zero-shot test metrics, and the ZO directional derivative a client uploads.
  bytes     measured bytes per round per method over the minimum (scalar-only: tau*P*4 up + 4*tau seeds
            down; vector methods: 4*d each way).

  tier      wall time of a workflow tier (default: the embedded CPU default, `make run`) in a fresh copy of the
            workflow with a fresh results folder on --cores cores, as a clean clone's first run (set-up excluded),
            and of the no-op rerun that follows.
  flower    bytes at every layer (payload, protocol messages, Flower messages, TCP) and time per round on a Flower
            deployment on 127.0.0.1, per problem and method (bench/flower_bytes.py); --rounds rounds each.
  warm      wall time of small runs started cold (a fresh `python -m hiso run`) over warm (forked from the
            workflow's warm runner), alternated (bench/warm_runner.py).

The parts live in bench/perf_kernels.py (measured in this process) and bench/perf_process.py (memory, clients and
tier: measured in fresh processes); this module is their command line.
The workflow's perf tier runs each part as a job and writes the results page (workflows/config/perf.yaml):
    snakemake --cores all --configfile workflows/config/perf.yaml
By hand, one part at a time:
    python -m bench.perf --only bytes --csv bytes.csv --meta bytes.json
    python -m bench.perf --only step --models tiny-llama --P 5 --repeats 5
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import pandas as pd
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bench import (
    perf_dispatch,  # noqa: E402
    perf_frozen,
    perf_int8,
    perf_lm,
    perf_numerics,
    warm_runner,  # noqa: E402
)
from bench import perf_kernels as kernels  # noqa: E402
from bench import perf_process as process  # noqa: E402
from hiso.gitinfo import commit  # noqa: E402
from hiso.io import atomic_write  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PARTS = ("lmround", "numerics", "dispatch", "portable", "frozen", "int8", "step", "bound", "memory", "clients", "replay", "profile", "chunk", "bytes", "warm", "tier", "flower")


def bench_flower(rounds: int) -> list[dict]:
    from bench import flower_bytes  # imports flwr: only for this part
    return flower_bytes.measure_all(rounds)


def machine() -> dict:
    """What a timing depends on: the CPU, how many, torch and its threads, and the load average (1 min)."""
    from hiso.numerics import cpu
    return {"cpu": cpu()["model"] or "unknown", "cpus": os.cpu_count(), "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", default="dispatch,portable,step,bound,memory,clients,replay,profile,chunk,bytes,warm,tier,flower",
                    help="the parts to run, comma-separated")
    ap.add_argument("--models", default="tiny-llama,smollm2-lora", help=f"of {', '.join(kernels.MODELS)}")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--P", default="1,5", help="perturbation counts of the step bench")
    ap.add_argument("--rounds", type=int, default=5, help="the flower part's rounds per deployment")
    ap.add_argument("--tier", default="default", help="the tier the tier part runs (workflows/config/<tier>.yaml)")
    ap.add_argument("--cores", type=int, default=2, help="the tier part's snakemake --cores")
    ap.add_argument("--keep", default=None, help="the tier part: move its results folder here (pages to publish)")
    ap.add_argument("--out", default=None, help="write <out>_<part>.csv")
    ap.add_argument("--csv", default=None, help="the one part's rows (with a single --only part)")
    ap.add_argument("--meta", default=None, help="a JSON of the part, its arguments, the machine, load and wall time")
    args = ap.parse_args()
    torch.set_num_threads(1)
    import logging
    logging.disable(logging.WARNING)
    models, only = args.models.split(","), args.only.split(",")
    unknown = [m for m in models if m not in kernels.MODELS] + [p for p in only if p not in PARTS]
    if unknown or ((args.csv or args.meta) and len(only) != 1):
        ap.error(f"unknown models or parts {unknown}" if unknown else "--csv and --meta take a single --only part")
    P = [int(p) for p in args.P.split(",")]
    parts = {"step": lambda: kernels.bench_step(models, args.repeats, P),
             "memory": lambda: process.bench_memory(models, 2), "clients": lambda: process.bench_clients(5),
             "replay": lambda: kernels.bench_replay(args.repeats), "chunk": lambda: kernels.bench_chunk(args.repeats),
             "profile": lambda: kernels.bench_profile(args.repeats),
             "bound": lambda: kernels.bench_bound(models, args.repeats), "bytes": kernels.bench_bytes,
             "dispatch": lambda: perf_dispatch.bench_dispatch(P=max(P)),
             "portable": lambda: kernels.bench_portable(args.repeats),
             "numerics": lambda: perf_numerics.bench_numerics(args.repeats),
             "lmround": lambda: perf_lm.bench_lm_round(args.repeats),
             "frozen": lambda: perf_frozen.bench_frozen(args.rounds),
             "int8": lambda: perf_int8.bench_int8(args.repeats),
             "warm": lambda: warm_runner.measure(args.repeats),
             "tier": lambda: process.bench_tier(args.tier, args.cores, args.keep), "flower": lambda: bench_flower(args.rounds)}
    for part in only:
        load0, t0 = os.getloadavg()[0], time.perf_counter()
        df = pd.DataFrame(parts[part]())
        meta = {"part": part, "models": models if part in ("step", "memory", "bound") else None,
                "repeats": args.repeats, "P": P if part == "step" else [max(P)] if part == "dispatch" else None,
                **({"tier": args.tier, "cores": args.cores} if part == "tier" else {}),
                **({"rounds": args.rounds} if part in ("flower", "frozen") else {}), **machine(),
                "load_before": load0, "load_after": os.getloadavg()[0], "wall_s": time.perf_counter() - t0,
                "commit": commit(ROOT)}
        print(f"\n## {part}\n")
        print(df.to_markdown(index=False, floatfmt=".3g"))
        if args.out:
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            df.to_csv(f"{args.out}_{part}.csv", index=False)
        if args.csv:
            atomic_write(args.csv, df.to_csv(index=False))
        if args.meta:
            atomic_write(args.meta, json.dumps(meta, indent=1) + "\n")


if __name__ == "__main__":
    main()
