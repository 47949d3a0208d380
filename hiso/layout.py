"""Where the trainable parameters live, and the stream definition that follows from it.

Two layouts (config `perturb.layout`):

- `tensors` (the CPU default): each trainable tensor is perturbed on its own, in pieces of at most
  `perturb.CHUNK` (2^18) entries.  A pass over the model costs a few ops per piece: fine on a CPU, where an op's
  host cost is small against its compute.
- `flat` (the CUDA default): the trainable tensors of one dtype become views into one contiguous buffer
  (`flatten_`), and elementwise curvatures see that buffer as a single tensor, drawn in pieces of
  `perturb.FLAT_CHUNK` (2^26) entries.  A pass over OPT-1.3B is then about 20 pieces instead of 5,260, and a
  forward-difference step folds each restore into the next perturbation (hiso/estimators.py).  Curvatures that
  are not elementwise (block or per-tensor statistics) keep one tensor per parameter, now views into the buffer.
  The layout runs on CPU too, so CI executes the code path a GPU takes.

A direction's values depend on the generator, the layout (what a piece is), the chunk (on CUDA, where
`normal_`'s thread grid depends on the piece size and the GPU model) and the device.  `fingerprint` records
them with a hash of one fixed-seed chunk drawn on the run's device; run.json and every checkpoint carry it, and
resuming under another fingerprint is refused (hiso/run.py).
"""
from __future__ import annotations

import functools
import hashlib

import torch

from .perturb import CHUNK, FLAT_CHUNK

LAYOUTS = ("auto", "tensors", "flat")
FINGERPRINT_SEED = 20240917  # the fixed seed of the fingerprint's draw
# the fields two runs must share for their directions to agree (torch/CUDA versions are recorded, not compared:
# the draw's hash already tells whether the generator's output changed)
COMPARED = ("generator", "layout", "chunk", "device", "draw_sha256")
# the layout still matters under the portable generator: the flat layout folds restores, which changes a client's
# losses by float rounding (not its directions)
PORTABLE_COMPARED = ("generator", "layout", "draw_sha256")


def resolve(layout: str, device: torch.device | str) -> str:
    """`auto` -> flat on an accelerator, tensors on the CPU (whose bits every existing result was computed with)."""
    if layout not in LAYOUTS:
        raise ValueError(f"perturb.layout must be one of {list(LAYOUTS)}, got {layout!r}")
    if layout != "auto":
        return layout
    return "tensors" if torch.device(device).type in ("cpu", "meta") else "flat"


def chunk_of(layout: str, chunk: int | None) -> int:
    """The piece size of a resolved layout (an explicit `perturb.chunk` wins)."""
    if chunk is not None:
        return int(chunk)
    return FLAT_CHUNK if layout == "flat" else CHUNK


@torch.no_grad()
def flatten_(params: list[torch.Tensor]) -> list[torch.Tensor]:
    """Re-home the tensors into one contiguous buffer per (dtype, device), in their order; every tensor becomes
    a view into its buffer (values unchanged), so the model computes with the buffer.  Returns the buffers.
    Tensors that already are consecutive views of one buffer are left as they are (idempotent)."""
    groups: dict[tuple, list[torch.Tensor]] = {}
    for p in params:
        groups.setdefault((p.dtype, p.device), []).append(p)
    buffers = []
    for (dtype, device), ps in groups.items():
        existing = _shared_buffer(ps)
        if existing is not None:
            buffers.append(existing)
            continue
        buf = torch.empty(sum(p.numel() for p in ps), dtype=dtype, device=device)
        off = 0
        for p in ps:
            n = p.numel()
            view = buf[off:off + n].view(p.shape)
            view.copy_(p)
            p.data = view
            off += n
        buffers.append(buf)
    return buffers


def _shared_buffer(ps: list[torch.Tensor]) -> torch.Tensor | None:
    """The buffer these tensors already tile in order (a second flatten_), else None.  (A parameter re-homed with
    `p.data = view` keeps no `_base`: the tiling is read from the storage and the offsets.)"""
    storage = ps[0].untyped_storage()
    off = 0
    for p in ps:
        if p.untyped_storage().data_ptr() != storage.data_ptr() or p.storage_offset() != off or not p.is_contiguous():
            return None
        off += p.numel()
    if off * ps[0].element_size() != storage.nbytes():
        return None
    return torch.empty(0, dtype=ps[0].dtype, device=ps[0].device).set_(storage, 0, (off,))


def trainable(params: list[torch.Tensor], layout: str, elementwise: bool = True) -> list[torch.Tensor]:
    """The tensors perturbations act on: the parameters themselves (tensors layout, or a curvature that is not
    elementwise on the flat layout, after re-homing them) or the flat buffers."""
    if layout == "tensors":
        return list(params)
    buffers = flatten_(params)
    return buffers if elementwise else list(params)


@functools.lru_cache(maxsize=8)
def _draw_digest(chunk: int, device: str, generator: str = "native") -> str:
    if device == "meta":  # shapes only (the dispatch counts): nothing is drawn
        return "meta"
    if generator == "portable":  # a fixed 2^16 entries: the hash must not depend on the chunk, nor the device
        from .portable import normal_
        x = normal_(torch.empty(1 << 16, dtype=torch.float32, device=device), FINGERPRINT_SEED, 0)
    else:
        gen = torch.Generator(device=device)
        gen.manual_seed(FINGERPRINT_SEED)
        x = torch.empty(chunk, dtype=torch.float32, device=device).normal_(generator=gen)
    return hashlib.sha256(x.cpu().numpy().tobytes()).hexdigest()[:16]


def fingerprint(layout: str, chunk: int, generator: str, device: torch.device | str) -> dict:
    """What the run's directions are a function of, with a hash of one fixed-seed chunk drawn on the device."""
    dev = torch.device(device)
    name = None
    if dev.type == "cuda":  # only a process that owns the device asks it for its name
        name = torch.cuda.get_device_name(dev)
    return {"generator": generator, "layout": layout, "chunk": int(chunk), "device": dev.type, "device_name": name,
            "torch": torch.__version__, "cuda": torch.version.cuda,
            "draw_sha256": _draw_digest(int(chunk), str(dev), generator)}


def mismatch(old: dict | None, new: dict) -> str | None:
    """Why directions drawn under `new` would differ from those recorded under `old` (None: they agree, or
    `old` predates fingerprints: a run of the CPU default, recorded before layouts existed).  Under the portable
    generator the chunk and the device do not matter; its draw's hash still must agree."""
    if not old:
        return None
    both_portable = old.get("generator") == new.get("generator") == "portable"
    fields = PORTABLE_COMPARED if both_portable else COMPARED
    diff = [f"{k} {old.get(k)!r} -> {new.get(k)!r}" for k in fields if old.get(k) != new.get(k)]
    return "; ".join(diff) or None


def config_stream(cfg) -> dict:
    """The fingerprint a config's run will draw under on this machine, without building its model (the Flower
    hello: every SuperNode compares the server's with its own before it computes anything)."""
    name = (cfg.task or {}).get("device", "cpu")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    layout = resolve(cfg.perturb.layout, name)
    return fingerprint(layout, chunk_of(layout, cfg.perturb.chunk), cfg.perturb.generator, name)
