"""GPU readiness of the paper tier, in one script that needs no network (random weights from the real OPT
configs shipped in bench/model_configs/, random token batches; no tokenizer).  Prints one JSON document:

  (a) seeded perturbations on the device: the same seed gives the same bits twice, and verified replay
      (every client really replays the round log) stays within 1e-6 of the server over >= 100 rounds;
  (b) client step time / ((P + 1) x one forward pass), DeComFL and HiSo, P = 5, per model;
  (c) peak device memory of a client step / peak of a plain forward pass (MeZO's inference-memory claim);
  (d) catch-up replay time per missed round / one torch.randn(d) on the device.

  .venv/bin/python -m bench.gpu_check --device cuda --out gpu_check.json     # on one GPU, < 8 minutes
  .venv/bin/python -m bench.gpu_check --device cpu --tiny                    # the same code path on CPU (CI)

Timings are medians of repeated measurements taken side by side in one process; ratios, not seconds, are
what compare across machines.  Trainable weights are fp32, as the paper tier runs them.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from hiso.config import CurvatureConfig, FederationConfig
from hiso.curvature import make_factory
from hiso.federation import Federation
from hiso.perturb import Scratch, StepDirections
from hiso.server import apply_record

CONFIGS = Path(__file__).resolve().parent / "model_configs"
TINY = {"vocab_size": 512, "hidden_size": 64, "ffn_dim": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
        "max_position_embeddings": 256, "word_embed_proj_dim": 64}


class RandomTokens:
    """A federated task over an OPT-architecture model with random weights and random token batches: the
    loss is next-token cross-entropy, so every forward pass costs what a real one of that length costs."""

    def __init__(self, model_name: str, device: torch.device, seq: int, seed: int = 0):
        from transformers import OPTConfig, OPTForCausalLM
        cfg = (OPTConfig(**TINY) if model_name == "tiny" else
               OPTConfig(**{k: v for k, v in json.loads((CONFIGS / f"{model_name}.json").read_text()).items()
                            if not k.startswith("_") and k not in ("architectures", "torch_dtype", "model_type")}))
        torch.manual_seed(seed)
        with torch.device(device):
            self.model = OPTForCausalLM(cfg).eval()
        self._params = list(self.model.parameters())
        for p in self._params:
            p.requires_grad_(False)
        self.device, self.seq, self.vocab = device, seq, cfg.vocab_size
        self.d = sum(p.numel() for p in self._params)

    def params(self):
        return self._params

    def batch(self, client: int, rng: np.random.Generator, size: int):
        ids = rng.integers(3, self.vocab, (size, self.seq))
        return torch.as_tensor(ids, device=self.device)

    @torch.no_grad()
    def loss(self, batch) -> float:
        return float(self.model(input_ids=batch, labels=batch).loss)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device, repeat: int) -> float:
    """Median seconds of fn() over `repeat` calls after one warm-up."""
    fn()
    out = []
    for _ in range(repeat):
        sync(device)
        t = time.perf_counter()
        fn()
        sync(device)
        out.append(time.perf_counter() - t)
    return statistics.median(out)


def federation(task, kind: str, P: int, verify: bool, lr: float = 1e-6) -> Federation:
    fed = FederationConfig(num_clients=6, clients_per_round=2, local_steps=1, perturbations=P, mu=1e-3, lr=lr,
                           batch_size=task.batch_size, verify_replay=verify)
    return Federation(task, make_factory(CurvatureConfig(kind=kind), task), fed, seed=0)


def check_determinism(task, rounds: int) -> dict:
    """(a): the same seed twice gives identical bits; verified replay over `rounds` rounds, HiSo curvature."""
    scratch = Scratch(task.params())
    curv = make_factory(CurvatureConfig(kind="identity"), task)(task.params())
    draws = []
    for _ in range(2):
        dirs = StepDirections(12345, 2, task.params(), curv, scratch)
        draws.append(torch.cat([q.z.clone().flatten() for q in dirs(1)]))
    init = [p.detach().clone() for p in task.params()]
    fed = federation(task, "diagonal", 5, verify=True)
    worst = max(fed.run_round()["replay_max_abs_diff"] for _ in range(rounds))
    moved = float(max((a - b).abs().max() for a, b in zip(fed.server.params, init)))
    return {"same_seed_same_bits": bool(torch.equal(*draws)), "replay_rounds": rounds,
            "replay_max_abs_diff": worst, "replay_ok": worst <= 1e-6, "model_moved": moved > 0}


def measure_model(task, P: int, repeat: int) -> dict:
    """(b), (c), (d) for one model."""
    dev = task.device
    b = task.batch(0, np.random.default_rng(0), task.batch_size)
    t_fwd = timed(lambda: task.loss(b), dev, repeat)
    out = {"params": task.d, "forward_s": t_fwd}
    for kind, name in (("identity", "decomfl"), ("diagonal", "hiso")):
        fed = federation(task, kind, P, verify=False)
        fed.run_round()  # warm-up (and H moves away from 1)
        curvature = fed.server.curvature
        rng_round = iter(range(10**6))

        def step():
            r = next(rng_round)
            fed._local_steps(0, r, np.array([r], np.uint32), curvature, fed.mu)
        t_step = timed(step, dev, repeat)
        out[f"{name}_step_s"] = t_step
        out[f"{name}_step_over_P1_forwards"] = t_step / ((P + 1) * t_fwd)
        rec = fed.server.log[-1]
        scratch = Scratch(fed.server.params)
        out[f"{name}_replay_round_s"] = timed(lambda: apply_record(fed.server.params, curvature, rec, fed.lr, scratch),
                                              dev, repeat)
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
            task.loss(b)
            sync(dev)
            fwd_peak = torch.cuda.max_memory_allocated()
            torch.cuda.reset_peak_memory_stats()
            step()
            sync(dev)
            out[f"{name}_peak_step_over_forward"] = torch.cuda.max_memory_allocated() / fwd_peak
        else:
            out[f"{name}_peak_step_over_forward"] = None  # device memory is a GPU measurement
        fed = None  # frees the device memory before the next model
    t_randn = timed(lambda: torch.randn(task.d, device=dev), dev, repeat)
    out["randn_d_s"] = t_randn
    for name in ("decomfl", "hiso"):
        out[f"{name}_replay_round_over_randn_d"] = out[f"{name}_replay_round_s"] / t_randn
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--tiny", action="store_true", help="a 2-layer OPT instead of the real configs (CPU, CI)")
    ap.add_argument("--models", default="opt-125m,opt-1.3b,opt-2.7b")
    ap.add_argument("--rounds", type=int, default=100, help="verified-replay rounds of check (a)")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seq", type=int, default=64)
    ap.add_argument("--out", default=None, help="also write the JSON here")
    a = ap.parse_args(argv)
    if a.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: torch sees no CUDA device (use --device cpu --tiny)")
    dev = torch.device(a.device)
    models = ["tiny"] if a.tiny else a.models.split(",")
    report = {"device": torch.cuda.get_device_name(0) if dev.type == "cuda" else "cpu", "torch": torch.__version__,
              "P": 5, "batch": a.batch, "seq": a.seq, "dtype": "float32", "models": {}}
    t0 = time.perf_counter()
    first = RandomTokens(models[0], dev, a.seq)
    first.batch_size = a.batch
    report["determinism"] = {"model": models[0], **check_determinism(first, a.rounds)}
    for name in models:
        task = first if name == models[0] else RandomTokens(name, dev, a.seq)
        task.batch_size = a.batch
        report["models"][name] = measure_model(task, 5, a.repeat)
        first = None
        del task
        if dev.type == "cuda":
            torch.cuda.empty_cache()
    report["wall_s"] = time.perf_counter() - t0
    text = json.dumps(report, indent=1)
    print(text)
    if a.out:
        Path(a.out).write_text(text + "\n")
    return report


if __name__ == "__main__":
    main()
