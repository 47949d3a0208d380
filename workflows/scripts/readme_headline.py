"""The README's headline table, generated from a table the workflow wrote (never typed): the ablation tier's
curvature kinds, each method at the step size its tuning run chose.

    python workflows/scripts/readme_headline.py           # rewrite the block in README.md
    python workflows/scripts/readme_headline.py --check   # exit 1 when README.md's block is stale

tests/test_docs.py runs --check.
"""
import argparse
import re
import sys
from pathlib import Path

import pandas as pd

from figures.style import label
from hiso.results import at_chosen_lr, compact_view

ROOT = Path(__file__).resolve().parents[2]
BLOCK = re.compile(r"(<!-- headline: generated from (\S+) by workflows/scripts/readme_headline.py; do not edit -->\n)"
                   r"(.*?)(<!-- end of headline -->)", re.S)


KEEP = ("method", "lr", "final ", "rounds to target", "vs ")  # the headline's columns (prefixes): the page has all


def short_verdict(claim: str) -> str:
    """A claim (hiso.noise.verdict) in a few words: the page gives the numbers behind it.  A difference whose
    interval excludes 0 but which stays within a spread reads "within the ... spread", so that the interval
    printed beside it does not seem to contradict the verdict."""
    if not isinstance(claim, str):
        return claim
    head, _, reason = claim.partition(":")
    for spread in ("seed", "rounding"):
        if f"<= {spread} spread" in reason:
            return f"within {spread} spread"
    return head


def render(csv: Path) -> str:
    """The table's citable view (hiso.results.compact_view), narrowed to the columns a front page needs."""
    chosen = at_chosen_lr(pd.read_csv(csv))
    claim = next(c for c in chosen.columns if c.startswith("claim vs "))
    chosen = chosen.assign(**{"method": chosen["method"].map(label), claim: chosen[claim].map(short_verdict)})
    view, _ = compact_view(chosen, "rel_suboptimality")
    view = view[[c for c in view.columns if c.startswith(KEEP)]]
    return (view.to_markdown(index=False) + "\n\nRounds: medians over seeds. A claim needs the 95 % interval to "
            f"exclude 0 and the difference to exceed the seed and rounding spreads; all columns: `{csv.relative_to(ROOT)}`.\n")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--check", action="store_true")
    a = ap.parse_args()
    readme = ROOT / "README.md"
    text = readme.read_text()
    m = BLOCK.search(text)
    if m is None:
        sys.exit("README.md has no headline block")
    new = text[:m.start(3)] + render(ROOT / m.group(2)) + text[m.end(3):]
    if a.check:
        if new != text:
            print(f"README.md's headline table differs from {m.group(2)}: run {__doc__.splitlines()[3].strip()}")
            return 1
        return 0
    readme.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
