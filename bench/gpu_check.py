"""GPU readiness of the paper tier, in one script that needs no network (random weights from the real OPT
configs shipped in bench/model_configs/, random token batches; no tokenizer).  Prints one JSON document:

  (a) seeded perturbations on the device: the same seed gives the same bits twice, and verified replay
      (every client really replays the round log) stays within 1e-6 of the server over >= 100 rounds, on the
      device's default layout; the stream fingerprint of each layout (hiso/layout.py);
  (b) client step time / ((P + 1) x one forward pass), DeComFL and HiSo, P = 5, per model and layout (the
      per-tensor layout and the flat one CUDA runs by default), with the step's aten ops, kernel launches and
      host syncs counted around it (bench/perf_dispatch.Counter);
  (c) memory above inference: the peak device memory of a client step minus the peak of a forward pass with the
      same resident state (model, curvature, scratch), in bytes and over the trainable fp32 bytes;
  (d) catch-up replay time per missed round / one torch.randn(d) on the device;
  (e) the portable generator (perturb.generator: portable): its draw on the device has the same bits as on the
      CPU, and a CPU replay of the device's round log reproduces the device's model (how a user checks that a CPU
      can replay, or join, their GPU runs).

The forward pass is the classification tasks' own: last-token logits over a two-word verbaliser (logits_to_keep=1)
on prompts of --seq tokens (SST-2's 32 by default), not a full-vocabulary head at every position.

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

from bench.perf_dispatch import Counter
from hiso.config import CurvatureConfig, FederationConfig, PerturbConfig
from hiso.curvature import make_factory
from hiso.federation import Federation
from hiso.perturb import Scratch, StepDirections
from hiso.server import apply_record

VERBALISER = [3, 4]  # two token ids standing for the label words ("negative", "positive")
CONFIGS = Path(__file__).resolve().parent / "model_configs"
TINY = {"vocab_size": 512, "hidden_size": 64, "ffn_dim": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
        "max_position_embeddings": 256, "word_embed_proj_dim": 64}


class RandomTokens:
    """A federated task over an OPT-architecture model with random weights and random token batches: the loss is
    the classification tasks' (cross-entropy of the last position's logits over a two-word verbaliser), so every
    forward pass costs what a real one of that length costs."""

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
        labels = rng.integers(0, 2, size)
        return torch.as_tensor(ids, device=self.device), torch.as_tensor(labels, device=self.device)

    @torch.no_grad()
    def device_loss(self, batch) -> torch.Tensor:
        ids, labels = batch
        logits = self.model(input_ids=ids, logits_to_keep=1).logits[:, -1, VERBALISER]
        return torch.nn.functional.cross_entropy(logits.float(), labels)

    def loss(self, batch) -> float:
        return float(self.device_loss(batch))


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


def federation(task, kind: str, P: int, verify: bool, lr: float = 1e-6, layout: str = "auto",
               generator: str = "native") -> Federation:
    fed = FederationConfig(num_clients=6, clients_per_round=2, local_steps=1, perturbations=P, mu=1e-3, lr=lr,
                           batch_size=task.batch_size, verify_replay=verify)
    return Federation(task, make_factory(CurvatureConfig(kind=kind), task), fed, seed=0,
                      perturb=PerturbConfig(layout=layout, generator=generator))


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
    return {"same_seed_same_bits": bool(torch.equal(*draws)), "layout": fed.layout, "replay_rounds": rounds,
            "replay_max_abs_diff": worst, "replay_ok": worst <= 1e-6, "model_moved": moved > 0}


def check_portable(task, rounds: int) -> dict:
    """(e) the portable generator: its draw on the device has the CPU's bits, and a CPU replay of the device's round
    log (HiSo and DeComFL, `rounds` rounds) reproduces the device's server model (max |diff|, and bitwise)."""
    from hiso.perturb import stream_seed
    from hiso.portable import normal_
    dev = task.device
    cpu = normal_(torch.empty(1 << 20), stream_seed(1, 0), 0)
    out = {"portable_draw_same_bits_as_cpu": bool(torch.equal(cpu, normal_(torch.empty(1 << 20, device=dev),
                                                                              stream_seed(1, 0), 0).cpu()))}
    for kind, name in (("identity", "decomfl"), ("diagonal", "hiso")):
        fed = federation(task, kind, 5, verify=False, lr=1e-4, generator="portable")
        params = [p.detach().cpu().clone() for p in fed.server.params]
        init = [p.clone() for p in params]
        for _ in range(rounds):
            fed.run_round()
        curvature = make_factory(CurvatureConfig(kind=kind), task)(params)
        scratch = Scratch(params, fed.chunk, "portable")
        for rec in fed.server.log:
            apply_record(params, curvature, rec, fed.lr, scratch, fed.weight_decay)
        pairs = list(zip(params, (p.cpu() for p in fed.server.params), strict=True))
        out[f"{name}_portable_cpu_replay_max_abs_diff"] = max(float((a - b).abs().max()) for a, b in pairs)
        out[f"{name}_portable_cpu_replay_same_bits"] = all(torch.equal(a, b) for a, b in pairs)
        out[f"{name}_portable_model_moved"] = any(not torch.equal(a, b) for a, b in zip(init, params, strict=True))
        fed = None
    out["portable_rounds"] = rounds
    return out


def peak_bytes(fn, dev) -> int | None:
    """Peak device memory allocated while fn() runs (None on CPU: device memory is a GPU measurement)."""
    if dev.type != "cuda":
        fn()
        return None
    sync(dev)
    torch.cuda.reset_peak_memory_stats()
    fn()
    sync(dev)
    return torch.cuda.max_memory_allocated()


def measure_model(task, P: int, repeat: int) -> dict:
    """(b), (c), (d) for one model, per layout."""
    dev = task.device
    b = task.batch(0, np.random.default_rng(0), task.batch_size)
    t_fwd = timed(lambda: task.loss(b), dev, repeat)
    out = {"params": task.d, "forward_s": t_fwd}
    for layout in ("tensors", "flat"):
        for kind, name in (("identity", "decomfl"), ("diagonal", "hiso")):
            fed = federation(task, kind, P, verify=False, layout=layout)
            fed.run_round()  # warm-up (and H moves away from 1)
            curvature = fed.server.curvature
            rng_round = iter(range(10**6))

            def step():
                r = next(rng_round)
                fed._local_steps(0, r, np.array([r], np.uint32), curvature, fed.mu)
            t_step = timed(step, dev, repeat)
            key = f"{name}_{layout}"
            out[f"{key}_step_s"] = t_step
            out[f"{key}_step_over_P1_forwards"] = t_step / ((P + 1) * t_fwd)
            with Counter(set(), task.d, fake_reads=False) as c:
                step()
            out[f"{key}_step_aten_ops"], out[f"{key}_step_launches"], out[f"{key}_step_syncs"] = c.ops, c.launch, c.syncs
            rec = fed.server.log[-1]
            out[f"{key}_replay_round_s"] = timed(
                lambda: apply_record(fed.server.params, curvature, rec, fed.lr, fed.server.scratch), dev, repeat)
            # (c) the same resident state (model, curvature, scratch) for both peaks: step minus forward
            fwd_peak, step_peak = peak_bytes(lambda: task.loss(b), dev), peak_bytes(step, dev)
            above = None if fwd_peak is None else step_peak - fwd_peak
            out[f"{key}_memory_above_forward_bytes"] = above
            out[f"{key}_memory_above_forward_over_4d"] = None if above is None else above / (4 * task.d)
            out[f"{layout}_stream"] = fed.stream
            fed = None  # frees the device memory before the next configuration
    t_randn = timed(lambda: torch.randn(task.d, device=dev), dev, repeat)
    out["randn_d_s"] = t_randn
    for layout in ("tensors", "flat"):
        for name in ("decomfl", "hiso"):
            out[f"{name}_{layout}_replay_round_over_randn_d"] = out[f"{name}_{layout}_replay_round_s"] / t_randn
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--tiny", action="store_true", help="a 2-layer OPT instead of the real configs (CPU, CI)")
    ap.add_argument("--models", default="opt-125m,opt-1.3b,opt-2.7b")
    ap.add_argument("--rounds", type=int, default=100, help="verified-replay rounds of check (a)")
    ap.add_argument("--portable-rounds", type=int, default=3,
                    help="rounds of check (e); its CPU replay of OPT-125M costs about 10 s per round and method")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seq", type=int, default=32, help="prompt tokens (SST-2's max_length)")
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
    report["portable"] = {"model": models[0], **check_portable(first, a.portable_rounds)}
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
