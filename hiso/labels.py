"""The names and colours tables and figures show for a tier's methods (`label:` / `color:` in a method's entry).

    from hiso.labels import labels
    labels(spec)  ->  {method: {"label": str, "color": str or None}}
"""
from __future__ import annotations

# display names of the variants and controls that are not methods of their own (a curvature kind, an aggregator)
NAMES = {"hiso-equal-lr": "HiSo (DeComFL's step size)", "hiso-oracle": "HiSo, true H",
         "decomfl-p10": "DeComFL, P = 10", "rmsprop-zo": "RMSProp-ZO", "identity": "identity H (DeComFL)",
         "diagonal": "diagonal H (HiSo)", "global-scalar": "global scalar H", "layer-scalar": "per-layer scalar H",
         "block-8": "8x8 block H", "oracle": "true H", "damped-oracle": "damped true H",
         "mean": "mean", "median": "median", "trimmed-mean": "trimmed mean", "clipped-mean": "clipped mean"}


def _short(key: str, value) -> str:
    """'curvature.beta', 0.9 -> 'beta 0.9' (a label's qualifier)."""
    v = f"{value:g}" if isinstance(value, float) else str(value)
    return f"{key.rsplit('.', 1)[-1].replace('_', ' ')} {v}"


def labels(spec: dict) -> dict[str, dict]:
    """method -> {"label": str, "color": str or None}: what tables and figures show for each method of an
    experiment.  A method's `label:` / `color:` win; a step-size variant <m>@<lr> is m's label with (lr ...); a
    rounding twin is its method's label with (+1 ulp); a registered method name is its registered label; any
    other key is the registered label of its `method:` with the sets that set it apart (beta 0.9, lr 0.03), so
    no yaml key reaches a table or legend where a label can be had."""
    from .plan import META_KEYS
    from .registry import methods as registered
    reg = registered()
    twins = spec.get("twins", {})
    out: dict[str, dict] = {}

    def named(key: str) -> str | None:  # a variant's display name, or a registered method's label
        return NAMES.get(key) or (reg[key].label if key in reg and reg[key].label else None)

    def derived(sets: dict, drop: tuple) -> str | None:  # the registered label of `method:` + what sets it apart
        if sets.get("method") not in reg:
            return None
        extra = [_short(k, v) for k, v in sets.items() if k not in (*META_KEYS, "method", *drop)]
        return reg[sets["method"]].label + (f" ({', '.join(extra)})" if extra else "")

    def one(m: str) -> dict:
        if m in out:
            return out[m]
        sets = spec["methods"].get(m) or {}
        if m in twins:
            src = one(twins[m])
            res = {"label": f"{src['label']} (+1 ulp)", "color": src["color"]}
        elif "label" in sets:
            res = {"label": str(sets["label"]), "color": sets.get("color")}
        elif "@" in m and m.split("@")[0] in spec["methods"]:
            base = one(m.split("@")[0])
            res = {"label": f"{base['label']} (lr {m.split('@', 1)[1]})", "color": base["color"]}
        elif "@" in m:  # an lr_grid point whose family is gone from methods (expand_lr_grids pops it)
            fam, lr = m.split("@", 1)
            name = named(fam) or derived(sets, ("federation.lr",)) or fam
            res = {"label": f"{name} (lr {lr})", "color": sets.get("color")}
        else:
            res = {"label": named(m) or derived(sets, ()) or m, "color": sets.get("color")}
        out[m] = res
        return res

    for m in spec["methods"]:
        one(m)
    return out
