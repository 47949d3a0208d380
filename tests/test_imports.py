"""The repository's import graph (hiso/importgraph.py, read with ast): no circles, and the file lists the workflow
gives its figure and table rules as inputs."""
from pathlib import Path

from hiso import importgraph

ROOT = Path(__file__).resolve().parents[1]


def test_the_import_graph_has_no_circle():
    graph = importgraph.graph(ROOT)
    assert {"hiso.config", "hiso.tasks.text", "hiso.run", "hiso.runner", "hiso.warm", "baselines.fedzo"} <= set(graph)
    assert importgraph.cycles(graph) == [], (
        "import circles (each list is a strongly connected set of modules; move what both need to a lower module, "
        f"such as hiso/checks.py or hiso/registry.py): {importgraph.cycles(graph)}")


def test_the_cycle_finder_finds_a_circle_through_a_lazy_import(tmp_path):
    pkg = tmp_path / "hiso"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from . import b\n")
    (pkg / "b.py").write_text("def f():\n    from .c import g\n")
    (pkg / "c.py").write_text("from hiso.a import b\n")
    assert importgraph.cycles(importgraph.graph(tmp_path)) == [["hiso.a", "hiso.b", "hiso.c"]]


def test_a_figure_rule_depends_on_every_repository_file_its_script_imports():
    files = {str(p.relative_to(ROOT)) for p in importgraph.closure(ROOT / "figures" / "convergence.py", ROOT)}
    assert {"figures/style.py", "hiso/results.py", "figures/__init__.py"} <= files
    assert all((ROOT / f).is_file() for f in files)
