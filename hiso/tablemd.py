"""The citable Markdown view of a summary table (hiso/results.py: summarise): what results pages and table
rules print."""
from __future__ import annotations

import math

import pandas as pd

from .noise import LAST_K

ALSO = ("accuracy", "test_loss")  # the text tasks' other headline metric, tabulated beside the chosen one


def _count(x: float) -> str:
    """Rounds and bytes: whole numbers without a decimal (110, 90), a median between two as 90.5."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return _sig(x)
    return f"{x:,.0f}" if float(x).is_integer() else f"{x:,.1f}"


def _sig(x: float, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    if isinstance(x, float) and math.isinf(x):
        return "not reached"
    if abs(x) >= 10 ** digits:
        return f"{x:,.0f}"
    text = f"{x:#.{digits}g}"  # keeps significant trailing zeros (0.110)
    return text.rstrip(".") if "e" not in text else f"{x:.{digits}g}"


def edge_choices(table: pd.DataFrame) -> list[str]:
    """'family (lr of lo-hi)' for every step size chosen at an edge of its grid."""
    if "lr at grid edge" not in table.columns:
        return []
    out = []
    for _, r in table[table["lr at grid edge"].astype(bool)].iterrows():
        if "family" not in table.columns or pd.isna(r.get("family")):  # chosen by a tuning job (attach_choices)
            tried = [float(t.split(":")[0]) for t in str(r["lrs tried"]).split("; ")]
            out.append(f"{r['method']} ({float(r['chosen lr']):g} of {min(tried):g}–{max(tried):g})")
            continue
        grid = table[table["family"] == r["family"]]["lr"]
        out.append(f"{r['family']} ({r['lr']:g} of {grid.min():g}–{grid.max():g})")
    return out


def escape_cells(table: pd.DataFrame) -> pd.DataFrame:
    """The table with every "|" in a text cell escaped, so that its markdown rows keep their columns (a claim's
    "|difference|")."""
    return table.map(lambda v: v.replace("|", "\\|") if isinstance(v, str) else v)


def _paired_cell(r: pd.Series, claim: str, diff: str) -> str:
    """A paired claim with its difference and 95 % interval (noise.noise_columns' `<diff> (mean)`, `(95% CI low)`,
    `(95% CI high)`), or "–" on the reference's own row."""
    if r[claim] == "reference":
        return "–"
    mean, lo, hi = (r[f"{diff} ({k})"] for k in ("mean", "95% CI low", "95% CI high"))
    return r[claim] + ("" if pd.isna(lo) else f" ({_sig(mean)}, 95% CI {_sig(lo)} to {_sig(hi)})")


def compact_markdown(table: pd.DataFrame, metric: str) -> str:
    """The citable view of a summary table: method, step size, final metric as mean ± std (n), rounds and bytes
    to the target, and rounds to DeComFL's best where there is one; 3 significant digits."""
    view, note = compact_view(table, metric)
    return view.to_markdown(index=False) + "\n\n" + note


def compact_view(table: pd.DataFrame, metric: str) -> tuple[pd.DataFrame, str]:
    """compact_markdown's rows (cells as text, a "|" escaped so that a markdown table keeps its columns) and the
    note that explains them."""
    ref = next((c for c in table.columns if c.startswith("rounds to ") and c.endswith("'s best (median)")), None)
    names = dict(zip(table["method"], table["label"])) if "label" in table.columns else {}
    rows = []
    for _, r in table.iterrows():
        n, lost = int(r["seeds"]), int(r["seeds diverged"])
        mean, std = r[f"final {metric} mean"], r[f"final {metric} std"]
        if math.isnan(mean):
            final = f"all {n} diverged" if lost == n else "–"
        else:
            final = f"{_sig(mean)} ± {_sig(std)} ({n - lost})" + (f", {lost} of {n} diverged" if lost else "")
        chosen = bool(r.get("best lr", False)) and "@" in r["method"]
        edge = bool(r.get("lr at grid edge", False))
        name = r["label"] if isinstance(r.get("label"), str) and r.get("label") else r["method"]
        row = {"method": name + (" ★" if chosen else "") + (" (grid edge)" if edge else "")}
        if "chosen lr" in table.columns:  # a step size chosen by a tuning job (tune / scan)
            row["lr"] = "–" if pd.isna(r["chosen lr"]) else f"{float(r['chosen lr']):g}"
        row[f"final {metric} (mean ± std (n))"] = final
        for m in ALSO:
            if f"{m} at the end (mean)" in table.columns:
                row[f"{m} at the end"] = f"{_sig(r[f'{m} at the end (mean)'])} ± {_sig(r[f'{m} at the end (std)'])}"
        if "rounding spread" in table.columns and int(r["rounding pairs"]):
            row["rounding spread (n)"] = f"{_sig(r['rounding spread'])} ({int(r['rounding pairs'])})"
        elif "rounding spread" in table.columns:
            row["rounding spread (n)"] = "not measured"
        if f"last-{LAST_K} {metric} mean" in table.columns:
            row[f"last {LAST_K} evals / best"] = (f"{_sig(r[f'last-{LAST_K} {metric} mean'])} / "
                                                 f"{_sig(r[f'best {metric} mean'])}")
        unreached = (f"not reached in {int(r['rounds']):,} rounds" if pd.notna(r.get("rounds", math.nan))
                     else "not reached")
        row.update({"rounds to target": _count(r["rounds to target (median)"]).replace("not reached", unreached),
                    "bytes to target": _count(r["bytes to target (median)"]).replace("not reached", unreached)})
        if "up bytes per client-round" in table.columns:
            row["up / down B per client-round"] = (f"{_count(r['up bytes per client-round'])} / "
                                                   f"{_count(r['down bytes per client-round'])}")
        if ref:
            key = ref.removeprefix("rounds to ").removesuffix("'s best (median)")
            row[f"rounds to {names.get(key, key)}'s best"] = _count(r[ref]).replace("not reached", unreached)
        claim = next((c for c in table.columns if c.startswith("claim vs ")), None)
        if claim:
            ref_of = claim.removeprefix("claim vs ")
            ref_name = names.get(ref_of, ref_of)
            row[f"vs {ref_name}: final difference, paired"] = _paired_cell(r, claim, f"final minus {ref_of}'s")
            if f"claim at best dev vs {ref_of}" in table.columns:  # runs that read a dev split: early stopping
                row["at the best dev round"] = (f"{_sig(r[f'{metric} at best dev mean'])} ± "
                                                f"{_sig(r[f'{metric} at best dev std'])}")
                row[f"vs {ref_name} at the best dev round, paired"] = _paired_cell(
                    r, f"claim at best dev vs {ref_of}", f"at best dev minus {ref_of}'s")
        if "seconds per round (mean)" in table.columns:
            # three significant digits: a digits round takes milliseconds, which one decimal would print as 0.0
            row["s per round / run"] = f"{_sig(r['seconds per round (mean)'])} / {_sig(r['seconds per run (median)'])}"
        rows.append(row)
    note = "★: the step size its tuning run chose. " if "best lr" in table.columns else ""
    if "chosen lr" in table.columns:
        note += ("lr: the step size its tuning job chose on the dev split (tried points and their rounds to the "
                 "target by the scan's criterion: `lrs tried` in the CSV). ")
    if "seconds per round (mean)" in table.columns:
        note += "Seconds per round include its evaluation (mean); per run, the median seed's total. "
    if "rounding spread" in table.columns:
        note += (f"Rounding spread: mean over seeds of |final(twin) − final(run)|, the twin being the same run with "
                 f"its initial model moved by one ulp (hiso/noise.py); last {LAST_K} evals: the mean of the last "
                 f"{LAST_K} evaluations; best: the best evaluation (means over seeds). A paired claim is made only "
                 "where the 95% interval excludes 0 and the difference exceeds both the seed spread (std) and the "
                 "rounding spread. ")
    if any(c.startswith("claim at best dev vs ") for c in table.columns):
        note += ("At the best dev round: each run's test metric at its best evaluation on the dev split (early "
                 "stopping chosen without the test set), compared the same way with its own spreads. ")
    edges = edge_choices(table)
    if edges:
        note += (f"Chosen at the edge of its grid, so the best step size may lie outside it: {', '.join(edges)}; "
                 "extend the grid (`lr_grid`, `tune`; a `scan` extends by itself up to 4 steps) past that edge. ")
    view = escape_cells(pd.DataFrame(rows))
    return view, note + "Rounds and bytes to target are medians over seeds; bytes are wire bytes, up + down."
