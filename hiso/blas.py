"""The portable numerics' matrix products for language models: every `nn.Linear` of an LM runs its float32 CPU
products through OpenBLAS's Haswell sgemm kernel (NumPy's OpenBLAS, its core type pinned by hiso/numerics.py).

Why: MKL gives the same bits on Intel and AMD CPUs only in its COMPATIBLE branch, which is several times slower
than its native sgemm; an LM forward is its GEMMs, so under MKL the portable mode doubled the LM tiers' cost.
OpenBLAS's Haswell kernel (AVX2 + FMA) runs the same instructions with the same blocking on every x86-64 CPU
that has them (its block sizes for that core type are constants, not read from the cache sizes), so it is
portable and near the native speed.  docs/results/perf.md measures both against the native kernels.

`route(model)` turns every module whose type is exactly `nn.Linear` (the frozen base, the LoRA adapters, the
head) into a `PortableLinear`: same parameters and state dict, and a forward that takes the OpenBLAS path for a
float32 CPU input and weight, and `F.linear` otherwise (CUDA, bfloat16): the branch a GPU takes.  Gradients (the
first-order baselines) go through the same kernel: d input = g W, d weight = g^T x; a backward that builds a
graph itself (Hessian-vector products, create_graph) takes torch's differentiable products instead.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import numerics


def _mm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a @ b for 2-D float32 CPU tensors through NumPy's OpenBLAS sgemm (a transposed view is passed as such)."""
    return torch.from_numpy(np.matmul(a.detach().numpy(), b.detach().numpy()))


def _rows(t: torch.Tensor) -> torch.Tensor:
    """t as a C-contiguous [rows, last dim] matrix (an operand NumPy hands to BLAS as it is)."""
    t = t.reshape(-1, t.shape[-1])
    return t if t.is_contiguous() else t.contiguous()


class _Linear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias):
        y = _mm(_rows(x), weight.t())
        if bias is not None:
            y += bias.detach()
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return y.reshape(*x.shape[:-1], weight.shape[0])

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        need_x, need_w, need_b = ctx.needs_input_grad
        if torch.is_grad_enabled():  # create_graph (Hessian-vector products): differentiable torch ops
            g, x2, mm = grad.reshape(-1, grad.shape[-1]), x.reshape(-1, x.shape[-1]), torch.matmul
        else:
            g, x2, mm = _rows(grad), _rows(x), _mm
        dx = mm(g, weight).reshape(x.shape) if need_x else None
        dw = mm(g.t(), x2) if need_w else None
        db = g.sum(0) if ctx.has_bias and need_b else None
        return dx, dw, db


def portable_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """F.linear, with float32 CPU products on OpenBLAS's pinned kernel."""
    if (x.device.type == "cpu" and weight.device.type == "cpu" and x.dtype == torch.float32
            and weight.dtype == torch.float32 and x.numel() > 0):
        return _Linear.apply(x, weight, bias)
    return F.linear(x, weight, bias)


class PortableLinear(nn.Linear):
    """nn.Linear whose float32 CPU products run on the pinned OpenBLAS kernel (hiso/blas.py)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return portable_linear(x, self.weight, self.bias)


def route(model: nn.Module) -> int:
    """Under portable numerics, route every exact `nn.Linear` of `model` through OpenBLAS; returns how many.
    Native numerics leave the model as it is (its kernels are this machine's anyway)."""
    if numerics.mode() != "portable":
        return 0
    n = 0
    for module in model.modules():
        if type(module) is nn.Linear:
            module.__class__ = PortableLinear
            n += 1
    return n
