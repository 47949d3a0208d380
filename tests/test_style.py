"""Figure colours: every method a shipped tier plots is told apart from the others in its figure, a new method
never takes a built-in method's colour, and labels come from the registry."""
from pathlib import Path

import matplotlib.colors as mcolors
import pytest
import yaml

from figures import style
from hiso import plan
from hiso.methods import METHODS, register_method
from hiso.registry import methods

ROOT = Path(__file__).resolve().parents[1]
TIERS = sorted(p.stem for p in (ROOT / "workflows" / "config").glob("*.yaml"))


def families_per_figure(cfg: dict) -> dict[str, list[str]]:
    """figure -> the method families it draws (a step-size grid is one family, drawn at its chosen lr)."""
    exps = plan.experiments(cfg)
    out = {f"convergence_{e}": sorted({m.split("@")[0] for m in spec["methods"]
                                       if m not in spec.get("tuning_only", [])}) for e, spec in exps.items()}
    for name, sw in (cfg.get("sweeps") or {}).items():
        out[f"sweep_{name}"] = sorted({m.split("@")[0] for p in sw["points"] if p in exps
                                       for m in exps[p]["methods"]})
    for exp, labels in (cfg.get("histograms") or {}).items():
        out[f"curvature_histogram_{exp}"] = list(labels)
    return out


@pytest.mark.parametrize("tier", TIERS)
def test_every_figure_of_a_tier_draws_its_methods_in_distinct_colours(tier):
    cfg = yaml.safe_load((ROOT / "workflows" / "config" / f"{tier}.yaml").read_text())
    for fig, names in families_per_figure(cfg).items():
        colors = style.palette(names)
        hexes = [mcolors.to_hex(colors[n]) for n in names]
        clash = {h: [n for n, x in zip(names, hexes) if x == h] for h in hexes if hexes.count(h) > 1}
        assert not clash, f"{tier}: {fig} draws {clash} in one colour"


def test_the_default_tiers_beta_variants_are_told_apart_from_fedzo_and_hiso():
    colors = style.palette(["hiso", "decomfl", "fedzo", "hiso-b0.99", "hiso-b0.90"])
    assert len(set(colors.values())) == 5
    for variant in ("hiso-b0.99", "hiso-b0.90"):  # far from HiSo's red and FedZO's purple, not just unequal
        assert style._far(colors[variant], [colors["hiso"], colors["fedzo"]], 0.25)


def test_registered_methods_have_distinct_colours_and_registry_labels():
    registered = {n: s.color for n, s in methods().items() if s.color}
    assert len(set(map(mcolors.to_hex, registered.values()))) == len(registered), registered
    assert style.label("fedzo@0.1") == "FedZO (lr 0.1)" and style.label("hiso") == "HiSo"


def test_a_new_method_without_a_colour_gets_one_no_method_uses():
    register_method("zo_example", lambda cfg, task, opts: None, label="ZO example")
    try:
        c = style.color("zo_example")
        assert mcolors.to_hex(c) not in style.taken()
        assert style._far(c, style.taken(), 0.25)
        assert style.label("zo_example@0.01") == "ZO example (lr 0.01)"
    finally:
        METHODS.pop("zo_example")
