"""Re-render committed results pages from their committed tables, without computing a round.

A page's text (docs/results/<page>.md) is what results_page.py writes from the page's tables, figures, readings and
header (command, commit, date).  When results_page.py's wording changes, or a page's readings are rewritten, this
brings every page's text up to date in place, keeping each header; `--check` only reports the pages whose text is
not what the rule writes today (exit 1), which is what tests/test_docs.py runs.

    .venv/bin/python workflows/scripts/rerender_pages.py --check          # which pages are stale
    .venv/bin/python workflows/scripts/rerender_pages.py                  # re-render them all in place
    .venv/bin/python workflows/scripts/rerender_pages.py docs/results/lm.md

Numbers are never changed here: a page whose tables no longer match what the code computes is found by running its
tier and comparing with compare_tables.py.  Pages with their own report (curvature.md, perf.md) are not table
pages and are skipped.
"""
from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from hiso.io import atomic_write

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "workflows" / "scripts" / "results_page.py"
HEADER = re.compile(r"^# (.*)\n\nWritten by the workflow \(`(.*)`\) at commit (\S+) on (\S+);", re.M)


def table_pages(folder: Path = ROOT / "docs" / "results") -> list[Path]:
    """The pages built from a tables folder beside them (<page>/tables)."""
    return sorted(p for p in folder.glob("*.md") if (p.parent / p.stem / "tables").is_dir())


def command(page: Path, out: Path) -> list[str]:
    """The results_page.py call that writes `page` to `out`, its arguments read from the page itself."""
    text = page.read_text()
    head = HEADER.search(text)
    if head is None:
        raise ValueError(f"{page}: no 'Written by the workflow' header under its title")
    exps = re.findall(r"^## (?!Sweep: )(\S+)\n", text, re.M)
    sweeps = re.findall(r"^## Sweep: (\S+)\n", text, re.M)
    here = page.parent / page.stem
    cmd = [sys.executable, str(SCRIPT), "--title", head.group(1), "--tables", str(here / "tables"),
           "--figures-rel", f"{page.stem}/figures", "--experiments", *exps, "--sweeps", *sweeps,
           "--command", head.group(2), "--commit", head.group(3), "--date", head.group(4), "--md", str(out)]
    readings = page.parent / f"{page.stem}.readings.md"
    if readings.exists():
        cmd += ["--readings", str(readings)]
    sensitivity = [e for e in exps if (here / "figures" / f"sensitivity_{e}.png").exists()]
    if sensitivity:  # experiments whose step sizes were scanned on a grid (the lm tier's)
        cmd += ["--sensitivity", *sensitivity]
    sliced = re.search(r"methods=\[([^]]*)\]", head.group(2))  # a page of some methods names its slice
    if sliced:
        cmd += ["--methods", *sliced.group(1).split(",")]
    return cmd


def render(page: Path, out: Path) -> str:
    """Write the page's re-rendered text to `out` and return it."""
    subprocess.run(command(page, out), check=True, capture_output=True, text=True)
    return out.read_text()


def stale(pages: list[Path]) -> list[Path]:
    """The pages whose committed text differs from what their rule writes today."""
    with tempfile.TemporaryDirectory() as tmp:
        return [p for p in pages if render(p, Path(tmp) / p.name) != p.read_text()]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("pages", nargs="*", type=Path, help="pages to re-render (default: every table page under "
                    "docs/results)")
    ap.add_argument("--check", action="store_true", help="only list the stale pages; exit 1 if there are any")
    a = ap.parse_args(argv)
    pages = a.pages or table_pages()
    for page in pages:
        if not (page.parent / page.stem / "tables").is_dir():
            print(f"{page}: not a table page (no {page.parent / page.stem / 'tables'})", file=sys.stderr)
            return 2
    old = stale(pages)
    if a.check:
        for p in old:
            print(f"{p}: differs from what results_page.py writes; re-render with {Path(__file__).name} {p}")
        return 1 if old else 0
    for p in old:
        with tempfile.TemporaryDirectory() as tmp:
            text = render(p, Path(tmp) / p.name)
        atomic_write(p, text)
        print(f"re-rendered {p}")
    print(f"{len(pages)} page(s) checked, {len(old)} re-rendered")
    return 0


if __name__ == "__main__":
    sys.exit(main())
