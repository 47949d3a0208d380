"""An int8 frozen base for LoRA against float32, on the lm tier's problem (SmolLM2-135M-Instruct + LoRA r8 on q, v,
Rotten Tomatoes, batches of 4), in this process's numerics (portable by default): what it saves and what it breaks.

The int8 model is the float32 one with every linear layer of the frozen base dynamically quantised
(torch.ao.quantization.quantize_dynamic: int8 weights, activations quantised per call); the LoRA adapters and the
head stay float32.  Both weight granularities are measured: one scale per tensor, and one per output channel.
For each:
- T_fwd: one forward pass of a client batch under each model, alternated `repeats` times (median);
- the zero-shot test loss and accuracy of each model on `test_size` test snippets;
- the ZO directional derivative a client uploads, (f(x + mu u) - f(x)) / mu at the tier's mu, for `directions`
  Gaussian directions u over the adapters, each on its own client batch, under both models: the float32
  derivatives' spread over directions (their std), the int8 ones' RMS difference from them in units of that
  spread, their correlation, and how often their signs agree.  A ZO method learns from these scalars only.
"""
from __future__ import annotations

import copy
import statistics
import time

import numpy as np
import torch

BASE = "workflows/config/base/smollm2_rotten_tomatoes_lora.yaml"
QCONFIGS = {"per tensor": "default_dynamic_qconfig", "per channel": "per_channel_dynamic_qconfig"}


def quantised(model: torch.nn.Module, qconfig: str) -> torch.nn.Module:
    """A copy of `model` whose frozen linear layers are int8 (dynamic quantisation); LoRA and the head stay fp32."""
    import warnings

    from torch.ao import quantization as q
    names = {n for n, m in model.named_modules()
             if isinstance(m, torch.nn.Linear) and "lora_" not in n and not n.endswith("lm_head")}
    copied = copy.deepcopy(model)
    for n, m in copied.named_modules():  # torch.ao swaps exact nn.Linear types: undo hiso/blas.py's routing on them
        if n in names:
            m.__class__ = torch.nn.Linear
    with warnings.catch_warnings():  # torch.ao's eager quantisation is deprecated (torchao replaces it); it still
        warnings.simplefilter("ignore")  # is the one torch ships, and this measurement needs nothing more
        return q.quantize_dynamic(copied, {n: getattr(q, qconfig) for n in names}, dtype=torch.qint8)


def _adapters(model: torch.nn.Module) -> list[torch.Tensor]:
    return [p for n, p in model.named_parameters() if "lora_" in n]


def _with(task, model, fn):
    """fn() with `model` as the task's model (the task's own loss and evaluation code paths)."""
    keep = task.model
    task.model = model
    try:
        return fn()
    finally:
        task.model = keep


@torch.no_grad()
def derivative(task, model, batch, directions: list[torch.Tensor], mu: float) -> float:
    """(f(x + mu u) - f(x)) / mu over the model's adapters, the scalar a forward-difference ZO client uploads."""
    params = _adapters(model)
    saved = [p.clone() for p in params]
    f0 = _with(task, model, lambda: task.loss(batch))
    for p, u in zip(params, directions):
        p.add_(u, alpha=mu)
    f1 = _with(task, model, lambda: task.loss(batch))
    for p, x in zip(params, saved):  # restored bit for bit: the next direction starts from the same x
        p.copy_(x)
    return (f1 - f0) / mu


def bench_int8(repeats: int = 5, directions: int = 16, test_size: int = 200, config: str = BASE,
               overrides: tuple[str, ...] = ()) -> list[dict]:
    from hiso.config import load_config
    from hiso.runner import build_federation
    cfg = load_config(config, ["method=decomfl", "federation.batch_size=4", "run.progress=false",
                               f"task.test_size={test_size}", *overrides])
    _, task = build_federation(cfg)
    fp32, mu, size = task.model, cfg.federation.mu, cfg.federation.batch_size
    batch = task.batch(0, np.random.default_rng(0), size)
    gen = torch.Generator().manual_seed(0)
    dirs = [[torch.randn(p.shape, generator=gen) for p in _adapters(fp32)] for _ in range(directions)]
    batches = [task.batch(k % cfg.federation.num_clients, np.random.default_rng(k), size) for k in range(directions)]
    base_eval = task.evaluate("test")
    base_derivs = np.array([derivative(task, fp32, b, u, mu) for b, u in zip(batches, dirs)])
    rows = []
    for label, qconfig in QCONFIGS.items():
        int8 = quantised(fp32, qconfig)
        for m in (fp32, int8):  # warm-up
            _with(task, m, lambda: task.loss(batch))
        t32, t8 = [], []
        for _ in range(repeats):
            t0 = time.perf_counter()
            _with(task, fp32, lambda: task.loss(batch))
            t1 = time.perf_counter()
            _with(task, int8, lambda: task.loss(batch))
            t8.append(time.perf_counter() - t1)
            t32.append(t1 - t0)
        ev = _with(task, int8, lambda: task.evaluate("test"))
        derivs = np.array([derivative(task, int8, b, u, mu) for b, u in zip(batches, dirs)])
        spread = float(base_derivs.std(ddof=1))
        rms = float(np.sqrt(np.mean((derivs - base_derivs) ** 2)))
        rows.append({"int8 weights": label, "fwd_fp32_s": statistics.median(t32), "fwd_int8_s": statistics.median(t8),
                     "fwd_int8_over_fp32": statistics.median(t8) / statistics.median(t32),
                     "test_snippets": test_size, "test_loss_fp32": base_eval["test_loss"],
                     "test_loss_int8": ev["test_loss"], "accuracy_fp32": base_eval["accuracy"],
                     "accuracy_int8": ev["accuracy"], "mu": mu, "directions": directions,
                     "derivative_std_fp32": spread, "derivative_rms_int8_minus_fp32": rms,
                     "rms_over_std": rms / spread, "derivative_correlation": float(np.corrcoef(derivs, base_derivs)[0, 1]),
                     "sign_agreement": float(np.mean(np.sign(derivs) == np.sign(base_derivs)))})
        print(rows[-1], flush=True)
    return rows
