"""Re-render committed results pages from their committed tables, without computing a round.

A page's text (docs/results/<page>.md) is what results_page.py writes from the page's tables, figures, readings and
header (command, commit, date).  When results_page.py's wording changes, or a page's readings are rewritten, this
brings every page's text up to date in place, keeping each header; `--check` only reports the pages whose text is
not what the rule writes today (exit 1), which is what tests/test_docs.py runs.

    .venv/bin/python workflows/scripts/rerender_pages.py --check          # which pages are stale
    .venv/bin/python workflows/scripts/rerender_pages.py                  # re-render them all in place
    .venv/bin/python workflows/scripts/rerender_pages.py docs/results/lm.md

The two pages with their own report are re-rendered by it from their committed CSVs, with the study or perf section
of the config files their header's command names (merged as Snakemake merges --configfile): curvature.md
(bench/curvature_report.py, from curvature/eval.csv and tuning.csv) and perf.md (bench/perf_report.py).

Numbers are never changed here: a page whose tables no longer match what the code computes is found by running its
tier and comparing with compare_tables.py, or by verify_runs.py for a page that carries its runs.
"""
from __future__ import annotations

import argparse
import re
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

from hiso.io import atomic_write

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "workflows" / "scripts" / "results_page.py"
HEADER = re.compile(r"^# (.*)\n\nWritten by the workflow \(`(.*)`\) at commit (\S+) on (\S+);", re.M)
REPORTS = ("curvature", "perf")  # pages with their own report, re-rendered from their CSVs


def table_pages(folder: Path = ROOT / "docs" / "results") -> list[Path]:
    """The pages built from a tables folder beside them (<page>/tables)."""
    return sorted(p for p in folder.glob("*.md") if (p.parent / p.stem / "tables").is_dir())


def pages(folder: Path = ROOT / "docs" / "results") -> list[Path]:
    """Every page this re-renders: the table pages and the report pages."""
    return sorted([*table_pages(folder), *(folder / f"{n}.md" for n in REPORTS if (folder / f"{n}.md").is_file())])


def configfiles(command: str) -> list[str]:
    """The config files a snakemake command line names after --configfile, in order."""
    files, after = [], False
    for word in shlex.split(command):
        if word == "--configfile":
            after = True
        elif after and word.endswith((".yaml", ".yml")):
            files.append(word)
        else:
            after = False
    return files


def report_text(page: Path) -> str:
    """A report page (curvature.md, perf.md) as its report writes it today from its committed CSVs."""
    from hiso.progress import tier_config
    text = page.read_text()
    head = HEADER.search(text)
    if head is None:
        raise ValueError(f"{page}: no 'Written by the workflow' header under its title")
    config = tier_config([ROOT / f for f in configfiles(head.group(2))])
    if page.stem == "curvature":
        from bench.curvature_report import page as render_report
        study = config["study"]
        readings = (ROOT / study["readings"]).read_text() if study.get("readings") else None
        return render_report(study, page.parent / "curvature", "curvature/agreement.png", head.group(2),
                             head.group(3), head.group(4), readings)
    from bench.perf_report import page as render_report
    perf = config["perf"]
    readings = (ROOT / perf["readings"]).read_text() if perf.get("readings") else None
    return render_report(perf, page.parent / "perf", head.group(2), head.group(3), head.group(4), readings)


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
    if page.stem in REPORTS and not (page.parent / page.stem / "tables").is_dir():
        atomic_write(out, report_text(page))
    else:
        subprocess.run(command(page, out), check=True, capture_output=True, text=True)
    return out.read_text()


def stale(pages: list[Path]) -> dict[Path, str]:
    """The pages whose committed text differs from what their rule writes today, with that text."""
    with tempfile.TemporaryDirectory() as tmp:
        again = {p: render(p, Path(tmp) / p.name) for p in pages}
    return {p: text for p, text in again.items() if text != p.read_text()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("pages", nargs="*", type=Path, help="pages to re-render (default: every page under docs/results)")
    ap.add_argument("--check", action="store_true", help="only list the stale pages; exit 1 if there are any")
    a = ap.parse_args(argv)
    chosen = a.pages or pages()
    for page in chosen:
        if not (page.parent / page.stem / "tables").is_dir() and page.stem not in REPORTS:
            print(f"{page}: neither a table page (no {page.parent / page.stem / 'tables'}) nor a report page "
                  f"({', '.join(f'{n}.md' for n in REPORTS)})", file=sys.stderr)
            return 2
    old = stale(chosen)
    if a.check:
        for p in old:
            print(f"{p}: differs from what results_page.py writes; re-render with {Path(__file__).name} {p}")
        return 1 if old else 0
    for p, text in old.items():
        atomic_write(p, text)
        print(f"re-rendered {p}")
    print(f"{len(chosen)} page(s) checked, {len(old)} re-rendered")
    return 0


if __name__ == "__main__":
    sys.exit(main())
