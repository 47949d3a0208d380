"""hiso/blas.py: under portable numerics an LM's linear layers compute on OpenBLAS's Haswell sgemm, bit for bit
what that kernel gives, with the gradients autograd gives, and every other input (the branch a GPU takes) on
F.linear."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from threadpoolctl import threadpool_info
from torch import nn

from hiso import blas, numerics
from hiso.models import load_model, make_trainable

ROOT = Path(__file__).resolve().parents[1]


def _layer(bias: bool = True) -> blas.PortableLinear:
    torch.manual_seed(0)
    layer = nn.Linear(24, 10, bias=bias)
    layer.__class__ = blas.PortableLinear
    return layer


@pytest.mark.parametrize("bias", [True, False])
def test_a_float32_cpu_product_is_openblas_sgemm_bit_for_bit(bias):
    layer, x = _layer(bias), torch.randn(3, 7, 24)
    y = layer(x)
    expect = np.matmul(x.reshape(-1, 24).numpy(), layer.weight.detach().numpy().T)
    if bias:
        expect += layer.bias.detach().numpy()
    assert y.shape == (3, 7, 10)
    assert np.array_equal(y.detach().reshape(-1, 10).numpy(), expect)
    torch.testing.assert_close(y, F.linear(x, layer.weight, layer.bias), rtol=1e-5, atol=1e-5)


def test_a_strided_input_is_the_same_product():
    layer, x = _layer(), torch.randn(7, 3, 24).transpose(0, 1)  # not contiguous
    assert torch.equal(layer(x), layer(x.contiguous()))


def test_gradients_through_the_pinned_kernel_are_autograds():
    layer, x = _layer(), torch.randn(4, 5, 24, requires_grad=True)
    ref = nn.Linear(24, 10)
    ref.load_state_dict(layer.state_dict())
    x_ref = x.detach().clone().requires_grad_(True)
    weights = torch.randn(4, 5, 10)
    (layer(x) * weights).sum().backward()
    (ref(x_ref) * weights).sum().backward()
    torch.testing.assert_close(x.grad, x_ref.grad, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(layer.weight.grad, ref.weight.grad, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(layer.bias.grad, ref.bias.grad, rtol=1e-5, atol=1e-5)
    # a frozen weight gets no gradient, the input still does (LoRA under a first-order baseline)
    layer.weight.requires_grad_(False)
    layer.bias.requires_grad_(False)
    x.grad = None
    (layer(x) * weights).sum().backward()
    torch.testing.assert_close(x.grad, x_ref.grad, rtol=1e-5, atol=1e-5)


def test_other_dtypes_and_devices_take_f_linear():
    """bfloat16 (a bf16 frozen base) and a non-CPU tensor (meta here: the branch a CUDA tensor takes) go through
    F.linear, whose result they equal exactly."""
    layer = _layer()
    bf = layer.to(torch.bfloat16)
    x = torch.randn(2, 24, dtype=torch.bfloat16)
    assert torch.equal(bf(x), F.linear(x, bf.weight, bf.bias))
    meta = _layer().to("meta")
    y = meta(torch.empty(2, 24, device="meta"))
    assert y.device.type == "meta" and y.shape == (2, 10)


def test_route_turns_every_linear_of_a_lora_model_and_keeps_its_state(monkeypatch):
    model, _ = load_model("tiny-llama")
    plain = sum(type(m) is nn.Linear for m in model.modules())
    keys = set(model.state_dict())
    model, params = make_trainable(model, "lora", lora_rank=4)
    assert not any(type(m) is nn.Linear for m in model.modules())
    routed = sum(type(m) is blas.PortableLinear for m in model.modules())
    assert routed == plain + 2 * 2 * 2  # every base linear, and lora_A, lora_B on q and v of 2 layers
    assert {k.replace("base_model.model.", "").replace(".base_layer", "") for k in model.state_dict()
            if "lora_" not in k} == keys
    monkeypatch.setenv("HISO_NUMERICS", "native")
    native, _ = load_model("tiny-llama")
    assert blas.route(native) == 0 and any(type(m) is nn.Linear for m in native.modules())


def test_openblas_core_type_and_threads_are_pinned_and_recorded():
    info = next(i for i in threadpool_info() if i["internal_api"] == "openblas")
    assert info["architecture"] == numerics.BLAS_CORE  # hiso was imported first (conftest), as at every entry point
    state = numerics.state()
    assert state["blas"]["architecture"] == "Haswell" and state["settings"]["OPENBLAS_CORETYPE"] == "Haswell"
    assert state["bit_identical_across_cpus"]
    numerics.apply_torch(2)
    try:
        assert numerics.blas()["threads"] == 2
    finally:
        numerics.apply_torch(1)
    assert numerics.blas()["threads"] == 1


def test_numpy_loaded_before_hiso_cannot_claim_portable_bits():
    """OpenBLAS reads its core type when it loads: a process that imported NumPy first keeps this CPU's kernel,
    and its runs say so (unless this CPU's kernel is the pinned one)."""
    code = ("import json, numpy, hiso; from hiso import numerics; numerics.apply_torch(1); s = numerics.state(); "
            "print(json.dumps([s['blas']['architecture'], s['bit_identical_across_cpus']]))")
    env = {k: v for k, v in __import__("os").environ.items() if k not in numerics.PORTABLE_ENV}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT,
                         env=env)
    architecture, claim = json.loads(out.stdout.strip().splitlines()[-1])
    assert claim == (architecture == "Haswell")


def test_a_resume_under_the_unpinned_blas_is_refused():
    now = numerics.state()
    before = json.loads(json.dumps(now))
    before["settings"].pop("OPENBLAS_CORETYPE")
    before.pop("blas")
    reason = numerics.mismatch(before, now)
    assert "OPENBLAS_CORETYPE" in reason and "blas_architecture None -> 'Haswell'" in reason
    assert numerics.mismatch(now, now) is None


def test_a_hessian_vector_product_through_the_layer_is_autograds():
    """create_graph=True (the Hutchinson diagonal of hiso/diagnostics.py) differentiates the backward again."""
    layer, x = _layer(), torch.randn(5, 24)
    ref = nn.Linear(24, 10)
    ref.load_state_dict(layer.state_dict())
    v = [torch.randn_like(p) for p in layer.parameters()]
    hv = []
    for module in (layer, ref):
        params = list(module.parameters())
        loss = (module(x).tanh() ** 2).sum()
        grads = torch.autograd.grad(loss, params, create_graph=True)
        hv.append(torch.autograd.grad(sum((g * u).sum() for g, u in zip(grads, v)), params))
    for a, b in zip(*hv):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_without_threadpoolctl_a_run_claims_no_portable_bits(monkeypatch):
    """An image without threadpoolctl (a GPU machine's own python3) cannot read or pin OpenBLAS: the run still
    starts, and says it cannot claim the same bits on another CPU."""
    monkeypatch.setitem(sys.modules, "threadpoolctl", None)  # import fails
    numerics.apply_torch(1)
    state = numerics.state()
    assert state["blas"] == {"version": None, "architecture": None, "threads": None}
    assert not state["bit_identical_across_cpus"]
