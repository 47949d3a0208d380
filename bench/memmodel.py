"""A GPU memory model of one run: the resident state each method keeps, plus the activations of its passes.

Counted in bytes, fp32 unless stated (N: all parameters, d: the trainable ones; LoRA: the adapters only):

  base       (N - d) x (4, or 2 for a bfloat16 frozen base) + 4 d          the model on the device
  ZO state   the server copy of the trainable tensors (4 d) + the direction scratch (u, acc and v: 3 pieces of
             min(d, 2^26) entries on the flat layout) + per method: HiSo's H (4 d; 8 d with curvature.feed
             every, which stages a copy), MeZO-momentum 4 d, ZO-Adam 8 d, HiZOO 8 d (H and its accumulator),
             FedZO 4 d (the uplink sum)
  FO state   server copy 4 d + uplink sum 4 d + gradient 4 d + a temporary of the largest tensor; the adaptive
             server optimizers (FedAdam/FedYogi/FedAdagrad) add their moments (8 d)
  activations, no-grad forward (ZO, and every evaluation at its own batch size): one layer's working set,
             b s (4 h + 2 f) floats, and b x vocab logits (the loss reads the last position only)
  activations, training forward (FO): L b s 34 h bytes x 2 (the fp16 count of Korthikanti et al. 2022, doubled
             for fp32), kept for the backward pass; the attention scores (their 5 a s^2 term) are not stored,
             since transformers' default SDPA attention recomputes them
  generation (SQuAD's evaluation): the key/value cache, 2 L (eval batch x beams) (s + new tokens) kv floats

The padded width s is twice the task's mean prompt length (workflows/scripts/plan_budget.py states them): a batch
pads to its longest prompt.  The model's own caches, the CUDA context (~0.5 GB) and the allocator's
fragmentation are not counted; `bench/gpu_check.py` measures the real peak above a forward on the GPU.
"""
from __future__ import annotations

from dataclasses import dataclass

GIB = 2 ** 30
FLAT_CHUNK = 1 << 26  # hiso.perturb.FLAT_CHUNK (a test keeps them equal)


@dataclass(frozen=True)
class Shape:
    params: float  # N
    hidden: int
    layers: int
    heads: int
    ffn: int
    vocab: int
    kv: int = 0  # width of the v projection (grouped-query attention); 0: hidden


# from the models' config.json on the Hugging Face hub (OPT: bench/model_configs; LLaMA 3.2: meta-llama)
SHAPES = {"opt-125m": Shape(125e6, 768, 12, 12, 3072, 50272),
          "opt-350m": Shape(331e6, 1024, 24, 16, 4096, 50272),
          "opt-1.3b": Shape(1.32e9, 2048, 24, 32, 8192, 50272),
          "opt-2.7b": Shape(2.65e9, 2560, 32, 32, 10240, 50272),
          "llama-3.2-1b": Shape(1.24e9, 2048, 16, 32, 8192, 128256, kv=512),
          "llama-3.2-3b": Shape(3.21e9, 3072, 28, 24, 8192, 128256, kv=1024)}

FIRST_ORDER = ("fedavg", "fedadam", "fedyogi", "fedadagrad", "fo")
ZO_EXTRA_D = {"hiso": 1, "mezo_momentum": 1, "zo_adam": 2, "hizoo": 2, "fedzo": 1}  # in units of 4 d bytes


def trainable(shape: Shape, lora: bool, rank: int = 8) -> float:
    """d: every parameter, or LoRA's A and B on q_proj (h -> h) and v_proj (h -> kv) of every layer."""
    if not lora:
        return shape.params
    return shape.layers * rank * (2 * shape.hidden + shape.hidden + (shape.kv or shape.hidden))


def peak_bytes(model: str, method: str, *, lora: bool, batch: int, tokens: int, eval_batch: int = 0,
               frozen_bf16: bool = False, feed_every: bool = False, lora_rank: int = 8, beams: int = 0,
               new_tokens: int = 0) -> dict[str, float]:
    """The model's terms (bytes) for one run; "peak" is their sum (activations: the larger of training and
    evaluation)."""
    s = SHAPES[model]
    d = trainable(s, lora, lora_rank)
    base = (s.params - d) * (2 if frozen_bf16 else 4) + 4 * d
    width = 2 * tokens
    if method in FIRST_ORDER:
        largest = s.vocab * s.hidden if not lora else d / s.layers
        state = 4 * d * 3 + 4 * largest + (8 * d if method != "fedavg" else 0)
        act = s.layers * batch * width * 34 * s.hidden * 2
    else:
        extra = ZO_EXTRA_D.get(method, 0) + (1 if method == "hiso" and feed_every else 0)
        state = 4 * d + 3 * 4 * min(d, FLAT_CHUNK) + 4 * d * extra
        act = 0.0
    act = max(act, *(4 * b * (width * (4 * s.hidden + 2 * s.ffn) + s.vocab) for b in (batch, eval_batch)))
    if beams:  # the evaluation generates: its cache holds every layer's keys and values
        act = max(act, 2 * s.layers * eval_batch * beams * (width + new_tokens) * (s.kv or s.hidden) * 4)
    return {"base": base, "state": state, "activations": act, "peak": base + state + act}
