"""What a ZO step asks of the host, counted on meta tensors: device-independent, no GPU and no memory needed.

A TorchDispatchMode counter runs around the real code (hiso.federation.Federation._local_steps for one client
step, hiso.server.apply_record for one server apply) on the full parameter shapes of OPT-125M / 1.3B / 2.7B
(bench/model_configs, built on the meta device: nothing is allocated), for HiSo (diagonal H) and DeComFL, on both
layouts (hiso/layout.py).  Per client step and per server apply it counts

  ops       aten ops dispatched (each costs host time on an accelerator, about 5 us in eager PyTorch);
  launch    those of them that launch a kernel (not views, empty allocations, detach, set_, or the sync itself);
  syncs     host syncs: a value read back to the host (_local_scalar_dense, a copy from the device to the CPU) and a
            copy from the host onto the device (a pageable host-to-device copy blocks the host too; also `h2d`);
  passes    writes into the parameters' storage, in units of the trainable size d (the memory traffic a step
            cannot avoid: every pass reads and writes d entries);
  bytes     bytes the launched kernels move (each reads its tensor arguments and writes its outputs once: a roofline
            count, per 4d) and entries drawn from the generator (per d): the device work of the time model;
  scratch   the bytes of the step's scratch buffers (perturb.Scratch: never d-sized on the tensors layout).

The forward passes are not counted: the step's loss is a stand-in (a 0-dim tensor derived from the parameters,
computed with the counter paused), so the counts are those of the ZO machinery alone; the model's own forward
dispatches the same ops under any ZO method.  On meta, reads back to the host return zeros (every scalar is 0,
no curvature is flagged), which changes no count: no branch of a step depends on those values.
"""
from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import torch
from torch.utils._python_dispatch import TorchDispatchMode

ROOT = Path(__file__).resolve().parents[1]
SHAPES = ("opt-125m", "opt-1.3b", "opt-2.7b")
NO_KERNEL = {"empty", "empty_strided", "empty_like", "detach", "alias", "set_", "lift_fresh", "_local_scalar_dense",
             "_to_copy", "resize_"}


class Counter(TorchDispatchMode):
    """Counts aten ops, kernel launches, host syncs and writes into the given storages (in units of d)."""

    def __init__(self, storages: set[int], d: int, fake_reads: bool = True):
        """`fake_reads`: answer reads back to the host with zeros (meta tensors hold no values); on a real device
        the reads happen and are counted."""
        super().__init__()
        self.fake_reads = fake_reads
        self.storages, self.d = storages, d
        self.ops = self.launch = self.syncs = self.h2d = 0
        self.passes = 0.0
        self.bytes = self.drawn = 0
        self.paused = False

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = func.__name__.split(".")[0]
        if self.paused:
            return func(*args, **kwargs)
        self.ops += 1
        if _from_host(name, args, kwargs):  # a pageable host-to-device copy: the host waits for it
            self.syncs += 1
            self.h2d += 1
            return func(*args, **kwargs)
        if name == "_local_scalar_dense" or (name == "_to_copy" and _to_host(args, kwargs)):
            self.syncs += 1
            src = args[0]
            if not self.fake_reads:
                return func(*args, **kwargs)
            if name == "_local_scalar_dense":
                return False if src.dtype == torch.bool else 0
            return torch.zeros(src.shape, dtype=kwargs.get("dtype") or src.dtype, device="cpu")
        launches, written = _schema(func, name)
        self.launch += launches
        for k in written:
            v = args[k] if k < len(args) else kwargs.get(func._schema.arguments[k].name)
            if isinstance(v, torch.Tensor) and v.untyped_storage()._cdata in self.storages:
                self.passes += v.numel() / self.d
        out = func(*args, **kwargs)
        if launches and name == "normal_":
            self.drawn += args[0].numel()  # a draw: costed by the generator's rate, not by bytes
        elif launches:  # a kernel reads its tensor arguments once and writes its outputs once (a roofline count)
            self.bytes += sum(_nbytes(v) for v in list(args) + list(kwargs.values()))
            self.bytes += sum(_nbytes(args[k]) for k in written if k < len(args))
            if not written:
                self.bytes += sum(_nbytes(v) for v in (out if isinstance(out, (tuple, list)) else [out]))
        return out


def _nbytes(v) -> int:
    if isinstance(v, torch.Tensor):
        return v.numel() * v.element_size()
    if isinstance(v, (list, tuple)):
        return sum(_nbytes(x) for x in v)
    return 0


@functools.cache
def _schema(func, name: str) -> tuple[int, tuple[int, ...]]:
    """(1 if the op launches a kernel else 0, the indices of the arguments it writes)."""
    is_view = any(a.alias_info is not None and not a.alias_info.is_write for a in func._schema.returns)
    written = tuple(k for k, a in enumerate(func._schema.arguments) if a.alias_info is not None and a.alias_info.is_write)
    return int(not is_view and name not in NO_KERNEL), written


def _from_host(name: str, args, kwargs) -> bool:
    """A copy from a CPU tensor onto another device (`.to(device)`, `copy_` into a device tensor): counted as a
    host sync, as a pageable copy blocks the host until it is done."""
    if name == "_to_copy":
        dev = kwargs.get("device")
        return isinstance(args[0], torch.Tensor) and args[0].device.type == "cpu" and dev is not None \
            and torch.device(dev).type != "cpu"
    if name == "copy_":
        dst, src = args[0], args[1]
        return isinstance(src, torch.Tensor) and src.device.type == "cpu" and dst.device.type != "cpu"
    return False


def _to_host(args, kwargs) -> bool:
    dev = kwargs.get("device")
    return isinstance(args[0], torch.Tensor) and args[0].device.type != "cpu" and dev is not None \
        and torch.device(dev).type == "cpu"


class ShapeTask:
    """The trainable parameters of a model's shapes on the meta device; the loss is a stand-in (module doc)."""

    def __init__(self, shape: str):
        from transformers import AutoConfig, AutoModelForCausalLM
        cfg = AutoConfig.for_model(**json.loads((ROOT / "bench" / "model_configs" / f"{shape}.json").read_text()))
        with torch.device("meta"):
            self.model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
        self._params = [p for p in self.model.parameters() if p.requires_grad]
        self.counter: Counter | None = None

    def params(self) -> list[torch.Tensor]:
        return self._params

    def batch(self, client, rng, batch_size):
        return None

    def device_loss(self, batch) -> torch.Tensor:
        self.counter.paused = True
        try:
            return self._params[0].reshape(-1)[:1].sum()
        finally:
            self.counter.paused = False


def build(shape: str, method: str, layout: str, P: int, tau: int, chunk: int | None = None):
    """A federation on the meta shapes, with the config a user writes for this method."""
    from hiso.config import load_config
    from hiso.curvature import make_factory
    from hiso.federation import Federation
    cfg = load_config(data={"method": method, "task": {"name": "quadratic"},
                            "federation": {"perturbations": P, "local_steps": tau, "num_clients": 2,
                                           "clients_per_round": 1},
                            "perturb": {"layout": layout, "chunk": chunk}})
    task = ShapeTask(shape)
    fed = Federation(task, make_factory(cfg.curvature, task), cfg.federation, cfg.seed, perturb=cfg.perturb)
    return fed, task


def count_client(shape: str, method: str, layout: str, P: int, tau: int, chunk: int | None = None) -> dict:
    fed, task = build(shape, method, layout, P, tau, chunk)
    d = sum(p.numel() for p in fed.work)
    storages = {p.untyped_storage()._cdata for p in fed.work}
    seeds = np.arange(1, tau + 1, dtype=np.uint32)
    with Counter(storages, d) as c:
        task.counter = c
        fed._local_steps(0, 0, seeds, fed.server.curvature, fed.step_mu())
    return {"ops": c.ops, "launch": c.launch, "syncs": c.syncs, "h2d": c.h2d, "passes": c.passes, "bytes": c.bytes, "drawn": c.drawn,
            "scratch_bytes": fed.scratch.nbytes(), "d": d, "fed": fed}


def count_server(fed, P: int, tau: int) -> dict:
    from hiso.protocol import RoundRecord
    from hiso.server import apply_record
    s = fed.server
    rec = RoundRecord(0, np.arange(1, tau + 1, dtype=np.uint32), np.zeros((tau, P), np.float32),
                      np.zeros(0, np.float32), 1)
    d = sum(p.numel() for p in s.params)
    with Counter({p.untyped_storage()._cdata for p in s.params}, d) as c:
        apply_record(s.params, s.curvature, rec, fed.lr, s.scratch, fed.weight_decay)
    return {"ops": c.ops, "launch": c.launch, "syncs": c.syncs, "passes": c.passes, "bytes": c.bytes, "drawn": c.drawn}


def bench_dispatch(shapes=SHAPES, P: int = 5, methods=("hiso", "decomfl"), layouts=("tensors", "flat")) -> list[dict]:
    rows = []
    for shape in shapes:
        for method in methods:
            for layout in layouts:
                one = count_client(shape, method, layout, P, 1)
                two = count_client(shape, method, layout, P, 2)  # the first of two steps applies its update
                fed = one.pop("fed")
                two.pop("fed")
                server = count_server(fed, P, 1)
                chunk = fed.scratch.chunk
                rows.append({
                    "model": shape, "method": method, "layout": layout, "d": one["d"],
                    "tensors": len(fed.task.params()), "chunk": chunk,
                    "pieces_per_pass": sum(-(-p.numel() // chunk) for p in fed.work), "P": P,
                    "client_ops": one["ops"], "client_launch": one["launch"], "client_syncs": one["syncs"],
                    "server_ops": server["ops"], "server_launch": server["launch"],
                    "server_syncs": server["syncs"],
                    "passes_step": round(one["passes"], 3),  # tau = 1: perturb, restore (no update)
                    "passes_step_update": round(two["passes"] - one["passes"], 3),  # a step with its update
                    "server_passes": round(server["passes"], 3),
                    # device work (the time model, bench/timemodel.py): bytes moved by the launched kernels (each
                    # reads its arguments and writes its outputs once) and entries drawn, per d
                    "client_bytes_over_4d": round(one["bytes"] / (4 * one["d"]), 3),
                    "client_drawn_over_d": round(one["drawn"] / one["d"], 3),
                    "server_bytes_over_4d": round(server["bytes"] / (4 * one["d"]), 3),
                    "server_drawn_over_d": round(server["drawn"] / one["d"], 3),
                    "scratch_bytes": one["scratch_bytes"], "scratch_over_d": one["scratch_bytes"] / (4 * one["d"])})
    return rows
