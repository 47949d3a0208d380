"""GPU readiness of the paper tier, in one script that needs no network (random weights from the real OPT
configs shipped in bench/model_configs/, random token batches; no tokenizer).  Prints one JSON document:

  (a) seeded perturbations on the device: the same seed gives the same bits twice, and verified replay
      (every client really replays the round log) stays within 1e-6 of the server over >= 100 rounds, on both
      layouts (per tensor in 2^18-entry pieces, and the flat buffer in 2^26-entry pieces CUDA runs by default);
      the stream fingerprint of each layout (hiso/layout.py);
  (b) client step time / ((P + 1) x one forward pass), DeComFL and HiSo, P = 5, per model and layout (the
      per-tensor layout and the flat one CUDA runs by default), with the step's aten ops, kernel launches and
      host syncs counted around it (bench/perf_dispatch.Counter);
  (c) memory above inference, measured in two stages: the model and a batch alone (resident bytes and the peak of
      a forward pass), then with the method's state (the server's copy, the curvature, the scratch): the bytes the
      state adds and the peak of a client step above the forward's peak, also over the trainable fp32 bytes.  On
      CPU the state's bytes are counted from its tensors (the peaks are a GPU measurement);
  (d) catch-up replay time per missed round / one torch.randn(d) on the device;
  (e) the portable generator (perturb.generator: portable): its draw on the device has the same bits as on the
      CPU, and a CPU replay of the device's round log reproduces the device's model (how a user checks that a CPU
      can replay, or join, their GPU runs); its cost per entry against torch's native normal_ on the device.

The process runs with the paper tier's backend settings (hiso.tasks.text.configure_backend: strict fp32 matmuls,
deterministic algorithms on CUDA), as a paper run does.

The forward pass is the classification tasks' own: last-token logits over a two-word verbaliser (logits_to_keep=1)
on prompts of --seq tokens (SST-2's 32 by default), not a full-vocabulary head at every position.

  PYTHONPATH=. python3 -m bench.gpu_check --device cuda --out gpu_check.json  # one GPU, < 7 minutes
  bench/device_check.sh                                                       # the same, as a GPU machine runs it
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

VERBALISER = (3, 4)  # two token ids standing for the label words ("negative", "positive")
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
        # the label words' ids live on the device, as the text tasks keep theirs: indexing with a Python list
        # would copy it to the device (and sync) on every forward
        self.label_ids = torch.tensor(VERBALISER, device=device)

    def params(self):
        return self._params

    def batch(self, client: int, rng: np.random.Generator, size: int):
        ids = rng.integers(3, self.vocab, (size, self.seq))
        labels = rng.integers(0, 2, size)
        return torch.as_tensor(ids, device=self.device), torch.as_tensor(labels, device=self.device)

    @torch.no_grad()
    def device_loss(self, batch) -> torch.Tensor:
        ids, labels = batch
        logits = self.model(input_ids=ids, logits_to_keep=1).logits[:, -1].index_select(-1, self.label_ids)
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


def flat(tensors) -> torch.Tensor:
    """One vector of a layout's tensors (the flat layout's one buffer, or the per-tensor list)."""
    return torch.cat([t.detach().reshape(-1) for t in tensors])


def check_determinism(task, rounds: int, layout: str) -> dict:
    """(a) on one layout: the same seed twice gives identical bits (in that layout's pieces); verified replay over
    `rounds` rounds with HiSo's curvature stays within 1e-6 of the server."""
    init = flat(task.params()).clone()
    fed = federation(task, "diagonal", 5, verify=True, layout=layout)
    curv = make_factory(CurvatureConfig(kind="identity"), task)(fed.server.params)
    scratch = Scratch(fed.server.params, fed.chunk)
    draws = []
    for _ in range(2):
        dirs = StepDirections(12345, 2, fed.server.params, curv, scratch)
        draws.append(torch.cat([q.z.clone().flatten() for q in dirs(1)]))
    worst = max(fed.run_round()["replay_max_abs_diff"] for _ in range(rounds))
    moved = float((flat(fed.server.params) - init).abs().max())
    return {"same_seed_same_bits": bool(torch.equal(*draws)), "layout": fed.layout, "chunk": fed.chunk,
            "replay_rounds": rounds, "replay_max_abs_diff": worst, "replay_ok": worst <= 1e-6, "model_moved": moved > 0}


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
    n = 1 << 22  # the draw's cost per entry on the device: portable over torch's native normal_
    buf = torch.empty(n, device=dev)
    t_native = timed(lambda: buf.normal_(), dev, 5)
    t_port = timed(lambda: normal_(buf, stream_seed(1, 0), 0), dev, 5)
    out.update(native_draw_ns_per_entry=1e9 * t_native / n, portable_draw_ns_per_entry=1e9 * t_port / n,
               portable_over_native_draw=t_port / t_native)
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


def resident_bytes(dev, tensors=()) -> int:
    """Bytes resident now: the device allocator's count on CUDA; on CPU the bytes of `tensors` (no allocator
    counts host memory by tensor)."""
    if dev.type == "cuda":
        sync(dev)
        return torch.cuda.memory_allocated()
    seen, total = set(), 0
    for t in tensors:
        key = (t.untyped_storage().data_ptr(), t.untyped_storage().nbytes())
        if key not in seen:
            seen.add(key)
            total += key[1]
    return total


def state_tensors(fed) -> list[torch.Tensor]:
    """The tensors a federation holds beside the task's model: the server's copy, the curvature, the scratch."""
    out = list(fed.server.params) + list(getattr(fed.server.curvature, "state", []) or [])
    out += [v for v in vars(fed.scratch).values() if isinstance(v, torch.Tensor)]
    return [t for t in out if isinstance(t, torch.Tensor) and t.numel()]


def measure_model(task, P: int, repeat: int) -> dict:
    """(b), (c), (d) for one model, per layout."""
    dev = task.device
    b = task.batch(0, np.random.default_rng(0), task.batch_size)
    t_fwd = timed(lambda: task.loss(b), dev, repeat)
    out = {"params": task.d, "forward_s": t_fwd}
    # (c), stage 1: the model and the batch alone, and the peak of their forward pass
    inference = resident_bytes(dev, [*task.params(), *b])
    forward_peak = peak_bytes(lambda: task.loss(b), dev)
    out["inference_resident_bytes"], out["forward_peak_bytes"] = inference, forward_peak
    for layout in ("tensors", "flat"):
        for kind, name in (("identity", "decomfl"), ("diagonal", "hiso")):
            key = f"{name}_{layout}"
            before = resident_bytes(dev, [*task.params(), *b])
            fed = federation(task, kind, P, verify=False, layout=layout)
            fed.run_round()  # warm-up (and H moves away from 1)
            curvature = fed.server.curvature
            # (c), stage 2: what the method's state adds to the model and batch
            state = resident_bytes(dev, [*task.params(), *b, *state_tensors(fed)]) - before
            out[f"{key}_state_bytes"], out[f"{key}_state_over_4d"] = state, state / (4 * task.d)
            rng_round = iter(range(10**6))

            def step():
                r = next(rng_round)
                fed._local_steps(0, r, np.array([r], np.uint32), curvature, fed.mu)
            t_step = timed(step, dev, repeat)
            out[f"{key}_step_s"] = t_step
            out[f"{key}_step_over_P1_forwards"] = t_step / ((P + 1) * t_fwd)
            with Counter(set(), task.d, fake_reads=False) as c:
                step()
            out[f"{key}_step_aten_ops"], out[f"{key}_step_launches"], out[f"{key}_step_syncs"] = c.ops, c.launch, c.syncs
            rec = fed.server.log[-1]
            out[f"{key}_replay_round_s"] = timed(
                lambda: apply_record(fed.server.params, curvature, rec, fed.lr, fed.server.scratch), dev, repeat)
            # the peak of a client step with the state resident, above the forward's peak without it
            step_peak = peak_bytes(step, dev)
            above = None if step_peak is None else step_peak - forward_peak
            out[f"{key}_memory_above_inference_bytes"] = above
            out[f"{key}_memory_above_inference_over_4d"] = None if above is None else above / (4 * task.d)
            out[f"{layout}_stream"] = fed.stream
            fed = curvature = None  # frees the device memory before the next configuration
            if dev.type == "cuda":
                torch.cuda.empty_cache()
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
    ap.add_argument("--models", default="opt-125m,opt-1.3b",
                    help="bench/model_configs/<name>.json (opt-2.7b also fits an H100, but not in one 10-minute call)")
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
    from hiso.tasks.text import TextOptions, configure_backend
    configure_backend(dev, TextOptions())  # the paper tier's: strict fp32 matmuls, deterministic on CUDA
    models = ["tiny"] if a.tiny else a.models.split(",")
    from hiso.runner import backend_state
    report = {"device": torch.cuda.get_device_name(0) if dev.type == "cuda" else "cpu", "torch": torch.__version__,
              "backend": backend_state(),
              "P": 5, "batch": a.batch, "seq": a.seq, "dtype": "float32", "models": {}}
    t0 = time.perf_counter()
    first = RandomTokens(models[0], dev, a.seq)
    first.batch_size = a.batch
    report["determinism"] = {layout: {"model": models[0], **check_determinism(first, a.rounds, layout)}
                             for layout in ("tensors", "flat")}
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
