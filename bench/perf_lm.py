"""The CPU LM path against what bounds it, on the lm tier's federation (SmolLM2-135M-Instruct + LoRA r8, Rotten
Tomatoes, 6 clients, 2 per round, P = 5, batches of 4), in this process's numerics (portable by default).

Three things are timed alternately, `repeats` times, so that a change in machine load hits each alike:
- T_fwd: one forward pass of a client batch (the loss a ZO step evaluates P + 1 times);
- T_round: one federated round without its evaluation (Federation.run_round: every sampled client's catch-up,
  perturbed forwards and upload, the server's aggregate and apply);
- T_mm: one float32 matmul of the model's MLP shape ([tokens x hidden] @ [hidden x intermediate]) through the
  kernel the model's linear layers use (an nn.Linear routed as hiso.models routes them: OpenBLAS's pinned sgemm
  under portable numerics, hiso/blas.py), the rate the forward's GEMMs could reach on this CPU.

Ratios: T_round / (clients x (P + 1) x T_fwd) (1 means a round costs its forward passes and nothing else), and
the forward's achieved FLOP rate over T_mm's (bench/timemodel.forward_flops: 2 FLOPs per non-embedding weight
and computed token, plus the head at the last position).
"""
from __future__ import annotations

import statistics
import time

import numpy as np
import torch

from bench.timemodel import forward_flops
from hiso import blas
from hiso.config import load_config
from hiso.runner import build_federation


def lm_round_config(method: str):
    return load_config("workflows/config/base/smollm2_rotten_tomatoes_lora.yaml",
                       [f"method={method}", "federation.batch_size=4", "federation.lr=0.005", "run.progress=false",
                        "task.test_size=20", "task.dev_size=20", "task.train_size=400"])


def bench_lm_round(repeats: int) -> list[dict]:
    rows = []
    for method in ("decomfl", "hiso"):
        cfg = lm_round_config(method)
        fed, task = build_federation(cfg)
        model = task.model
        hidden, inter = model.config.hidden_size, model.config.intermediate_size
        embedding = model.get_input_embeddings().weight.numel()
        total = sum(p.numel() for p in model.parameters())
        batch = task.batch(0, np.random.default_rng(0), cfg.federation.batch_size)
        seqs, width = batch["input_ids"].shape
        tokens = seqs * width  # positions computed (left padding included)
        flops = forward_flops(total, embedding, embedding, tokens, seqs)  # the head is tied to the embedding
        a, layer = torch.randn(tokens, hidden), torch.nn.Linear(hidden, inter, bias=False)
        blas.route(layer)
        fed.run_round()  # warm-up: first-touch allocations, catch-up of the first clients
        task.loss(batch)
        fwd, rnd, mm = [], [], []
        for _ in range(repeats):
            t0 = time.perf_counter()
            task.loss(batch)
            t1 = time.perf_counter()
            fed.run_round()
            t2 = time.perf_counter()
            with torch.no_grad():
                for _ in range(20):
                    layer(a)
            t3 = time.perf_counter()
            fwd.append(t1 - t0)
            rnd.append(t2 - t1)
            mm.append((t3 - t2) / 20)
        t_fwd, t_round, t_mm = statistics.median(fwd), statistics.median(rnd), statistics.median(mm)
        k = cfg.federation.clients_per_round * cfg.federation.local_steps * (cfg.federation.perturbations + 1)
        fwd_rate, mm_rate = flops / t_fwd, 2 * tokens * hidden * inter / t_mm
        rows.append({"method": method, "d": sum(p.numel() for p in task.params()), "batch": seqs, "tokens": tokens,
                     "forwards_per_round": k, "fwd_s": t_fwd, "round_s": t_round,
                     "round_over_forwards": t_round / (k * t_fwd), "fwd_gflops": fwd_rate / 1e9,
                     "matmul_gflops": mm_rate / 1e9, "fwd_over_matmul_rate": fwd_rate / mm_rate})
        print(rows[-1], flush=True)
    return rows
