"""Summary table of one experiment (CSV + Markdown), from its runs' metrics only."""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from hiso.results import HIGHER_IS_BETTER, load_runs, summarise  # noqa: E402
from hiso.run import atomic_write  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("--root", required=True)
ap.add_argument("--metric", required=True)
ap.add_argument("--target", type=float, required=True)
ap.add_argument("--csv", required=True)
ap.add_argument("--md", required=True)
a = ap.parse_args()
table = summarise(load_runs(a.root), a.metric, a.target)
atomic_write(Path(a.csv), table.to_csv(index=False))
op = ">=" if HIGHER_IS_BETTER.get(a.metric, True) else "<="
header = (f"Target: {a.metric} {op} {a.target}. Rounds, bytes and forward passes to target are medians over "
          "seeds (inf: not reached); bytes are measured wire bytes, up + down.\n\n")
atomic_write(Path(a.md), header + table.to_markdown(index=False, floatfmt=".4g") + "\n")
print(table.to_string(index=False))
