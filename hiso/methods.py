"""Method registry: every method is the same loop (rounds of a `Method` object), built by name.

A method object runs one round at a time and reports a metrics row; the runner handles evaluation,
checkpoints, divergence and outputs.  Interface (typed in hiso/contracts.py: `Method`, and the `RoundRow`
every run_round returns as a dict):

    rounds_done: int
    run_round() -> dict           must include round, train_loss, bytes_up, bytes_down, forward_passes
    load_server_model() -> None   put the global model into the task's working model (for evaluation)
    global_params() -> list[Tensor]
    state_dict() / load_state_dict(sd)   everything needed to resume exactly

Register with `register_method(name, build, Options, label=, color=, check=)`: `build(cfg, task, options)`
returns the method object; `Options` (a dataclass, optional) validates the config's `method_options:` section;
`check(cfg, options)` refuses what the method cannot run (a ValueError, shown as a config error before any
compute); `label` and `color` are how every figure and table shows it (without a colour, figures give it one that
no registered method uses).  HiSo and DeComFL are the
scalar-only federation with learned / identity curvature; baselines live in `baselines/`.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class MethodSpec:
    build: Callable[[Any, Any, Any], Any]
    Options: type | None = None
    default_curvature: str | None = None  # scalar-only methods: the curvature kind they stand for
    fixed_curvature: bool = False  # the method *is* that curvature (decomfl = identity)
    doc: str = ""
    weight_decay: bool = False  # implements federation.weight_decay (others refuse a non-zero value)
    faults: bool = False  # honours federation.faulty_clients and federation.aggregator (hiso/faults.py)
    deployable: bool = False  # runs on federation.engine: flower (its clients are Federation.client_round)
    label: str | None = None  # its name in figures and tables (default: the registered name)
    color: str | None = None  # its colour in every figure (a matplotlib colour; default: one no method uses)
    check: Callable[[Any, Any], None] | None = None  # check(cfg, options): raise ValueError to refuse a config


METHODS: dict[str, MethodSpec] = {}


def register_method(name: str, build, Options: type | None = None, default_curvature: str | None = None,
                    fixed_curvature: bool = False, doc: str = "", weight_decay: bool = False,
                    faults: bool = False, deployable: bool = False, label: str | None = None,
                    color: str | None = None, check=None) -> None:
    """Make a method available as `method: <name>` in configs (`weight_decay=True`: it honours
    federation.weight_decay)."""
    if name in METHODS and METHODS[name].build is not build:
        raise ValueError(f"method {name!r} is already registered")
    METHODS[name] = MethodSpec(build, Options, default_curvature, fixed_curvature, doc, weight_decay, faults,
                               deployable, label, color, check)


def scalar_only(cfg, task, options, cls=None, **extra):
    """Build the scalar-only federation (or a subclass `cls`, with its `extra` keyword arguments)."""
    from .curvature import make_factory
    from .federation import Federation
    return (cls or Federation)(task, make_factory(cfg.curvature, task), cfg.federation, cfg.seed,
                               perturb=cfg.perturb, **extra)


register_method("hiso", scalar_only, default_curvature="diagonal", weight_decay=True, faults=True,
                deployable=True, label="HiSo", color="#d62728", doc="scalar-only federated ZO with a curvature learned from the round log (HiSo)")
register_method("decomfl", scalar_only, default_curvature="identity", fixed_curvature=True, weight_decay=True,
                faults=True, deployable=True, label="DeComFL", color="#1f77b4",
                doc="scalar-only federated ZO-SGD (DeComFL): HiSo with identity curvature")
register_method("rmsprop_zo", scalar_only, default_curvature="rmsprop", fixed_curvature=True, weight_decay=True,
                faults=True, deployable=True, label="RMSProp-ZO", color="#9edae5",
                doc="control: isotropic directions, update rescaled by the same learned diagonal (scalar-only)")


PLUGIN_GROUP = "hiso.methods"


def load_baselines() -> None:
    """Import every package that registers methods through the `hiso.methods` entry point group (idempotent).
    This repository's `baselines` package is one (pyproject.toml); a package of your own methods joins with

        [project.entry-points."hiso.methods"]
        mymethods = "mymethods"

    hiso itself never imports a baseline by name, so the registry has no import cycle."""
    import importlib
    from importlib.metadata import entry_points
    for ep in entry_points(group=PLUGIN_GROUP):
        importlib.import_module(ep.value)
