"""Curvature states H, rebuilt by every party from the round log alone (never sent).

Each curvature object maps a standard normal direction u to z = H^{-1/2} u, tensor by tensor, and updates
itself from the aggregated update of a round.  Identity gives DeComFL; Diagonal gives HiSo (paper Eq. 12):

    H_{r+1} = beta * H_r + (1 - beta) * (Delta x_r ** 2 + eps),   H_0 = 1.

`moment` picks what "Delta x ** 2" means (docs/algorithm.md, the decisions table):
- "square_of_mean" (default, the authors' code): the square of the aggregated update (needs only g-bar);
- "mean_of_squares" (paper Eq. 12): the average over clients of each client's squared update, rebuilt from
  the P x P Gram matrix of client scalars that the server adds to the log (P(P+1)/2 extra scalars per step).
`feed` picks which local steps feed the EMA: "last" (default) or "every" (one EMA step per local step, all
computed with the round's H, so local steps never change H).

Layout: base.py (the Curvature base class and shared helpers), kinds.py (Identity, Diagonal = HiSo,
LayerScalar, BlockDiagonal, Oracle), controls.py (RMSProp, GlobalScalar, SecondDifference, Stein,
DampedOracle, Mixed); KINDS and make_factory here.
"""
from __future__ import annotations

import logging

from .base import Curvature, CurvatureError, Moment, gram_full, gram_upper  # noqa: F401
from .controls import DampedOracle, GlobalScalar, Mixed, RMSProp, SecondDifference, Stein  # noqa: F401
from .kinds import BlockDiagonal, Diagonal, Identity, LayerScalar, Oracle  # noqa: F401

log = logging.getLogger(__name__)
KINDS: dict[str, type[Curvature]] = {}


def register_curvature(cls: type[Curvature]) -> type[Curvature]:
    """Make `curvature.kind: <cls.kind>` available: the config accepts the name, `make_factory` builds it with
    its `config_keys` options and `task_args`, and a task lacking one of its `needs` is refused."""
    if cls.kind in KINDS and KINDS[cls.kind] is not cls:
        raise ValueError(f"curvature kind {cls.kind!r} is already registered")
    KINDS[cls.kind] = cls
    return cls


for _cls in (Identity, Diagonal, LayerScalar, BlockDiagonal, Oracle, RMSProp, GlobalScalar, SecondDifference, Stein,
             DampedOracle, Mixed):
    register_curvature(_cls)


def config_problem(cfg, task_cls, defaults) -> str | None:
    """What is wrong with the config's `curvature:` section for its chosen kind (None: nothing): the kind is
    registered, its task has what it `needs`, second-difference kinds run central differences, its own options
    hold (the kind's `option_checks`).  An option the kind ignores, set away from its default (`defaults`), is
    logged as a warning and reset to its default: it changes nothing the run computes, so not its identity."""
    c, kind = cfg.curvature, cfg.curvature.kind
    if kind not in KINDS:
        return f"curvature.kind must be a registered kind ({', '.join(KINDS)}), got {kind!r}"
    cls = KINDS[kind]
    if not all(hasattr(task_cls, m) for m in cls.needs):
        return f"curvature.kind: {kind} needs a task that knows its Hessian (quadratic); task {cfg.task['name']!r} does not"
    if cls.second_differences and cfg.federation.difference != "central":
        return (f"curvature.kind: {kind} uploads second differences, which need f(x + mu z) and f(x - mu z): set "
                "federation.difference: central (2P + 1 passes)")
    if cls.second_differences and c.moment != "square_of_mean":
        return (f"curvature.moment: {kind} learns from second differences, not from the update's moment; leave "
                "moment at square_of_mean")
    for key, holds, what in cls.option_checks(cfg):
        if not holds:
            return f"curvature.{key} must be {what}, got {getattr(c, key)!r}"
    for key in unread_options(cfg, defaults):
        readers = sorted(k.kind for k in KINDS.values()
                         if key in k.config_keys.values() or (key in EMA_KEYS and k.learned))
        log.warning("curvature.%s: %r is an option of kind %s; method %s (kind %s) does not read it, so it is left "
                    "out of the run's identity", key, getattr(c, key), ", ".join(readers), cfg.method, kind)
        setattr(c, key, getattr(defaults, key))  # the same run as without it: the same config hash
    return None


EMA_KEYS = ("beta", "eps", "feed", "moment")  # read by learned kinds only (Identity and the oracles learn nothing)


def unread_options(cfg, defaults) -> list[str]:
    """Keys of `curvature:` that the config sets away from their defaults and the chosen kind ignores: another
    kind's options, and the EMA's options under a kind that learns nothing (DeComFL's identity, the oracles)."""
    cls = KINDS[cfg.curvature.kind]
    used = set(cls.config_keys.values()) | (set(EMA_KEYS) if cls.learned else set())
    keys = dict.fromkeys([*EMA_KEYS, *(key for k in KINDS.values() for key in k.config_keys.values())])
    return [key for key in keys if key not in used and getattr(cfg.curvature, key) != getattr(defaults, key)]


def make_factory(c, task):
    """params -> bound curvature object, from the config's `curvature:` section (a CurvatureConfig)."""
    cls = KINDS[c.kind]
    kw = dict(beta=c.beta, eps=c.eps, feed=c.feed, moment=c.moment,
              **{arg: getattr(c, key) for arg, key in cls.config_keys.items()})
    args = cls.task_args(task)

    def factory(params):
        return cls(*args, **kw).bind(params)
    factory.elementwise = cls.elementwise  # the flat layout gives such kinds one buffer, others one view per tensor
    return factory
