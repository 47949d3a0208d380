"""The repository's own import graph, read from the source with `ast` (nothing is imported).

Every `import` statement counts, at module level or inside a function: a lazy import still ties two modules
together.  Used by the workflow (a figure or table rule's inputs are the files its script imports, so an edit to
any of them re-renders it) and by the test that keeps the graph free of circles.
"""
from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

PACKAGES = ("hiso", "baselines", "figures", "bench")  # top-level packages of this repository


def module_name(path: Path, root: Path) -> str:
    parts = list(path.resolve().relative_to(root.resolve()).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def module_file(name: str, root: Path) -> Path | None:
    base = root.joinpath(*name.split("."))
    for p in (base.with_suffix(".py"), base / "__init__.py"):
        if p.is_file():
            return p
    return None


@cache
def _imports(path: Path, root: Path) -> tuple[str, ...]:
    """The repository modules `path` imports (absolute names; `from pkg import mod` yields pkg.mod when mod is a
    module, else pkg)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    here = module_name(path, root).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
            names = [f"{base}.{a.name}" if module_file(f"{base}.{a.name}", root) else base for a in node.names]
        else:
            continue
        for name in names:
            if name.split(".")[0] in PACKAGES and module_file(name, root):
                found.add(name)
    return tuple(sorted(found))


def graph(root: Path) -> dict[str, set[str]]:
    """module -> the repository modules it imports, over every module of PACKAGES (parent packages excluded:
    importing hiso.config runs hiso/__init__.py, which is kept empty of imports)."""
    out = {}
    for pkg in PACKAGES:
        for path in sorted((root / pkg).rglob("*.py")):
            out[module_name(path, root)] = set(_imports(path, root))
    return out


def closure(script: Path, root: Path) -> list[Path]:
    """Every repository file a script imports, directly or through other repository modules (and the packages'
    __init__ files on the way), sorted."""
    seen: set[Path] = set()
    todo = [script.resolve()]
    while todo:
        path = todo.pop()
        for name in _imports(path, root.resolve()):
            parts = name.split(".")
            for k in range(1, len(parts) + 1):
                f = module_file(".".join(parts[:k]), root)
                if f is not None and f.resolve() not in seen:
                    seen.add(f.resolve())
                    todo.append(f.resolve())
    return sorted(seen - {script.resolve()})


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan): each is at least one circle."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in g.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(g):
        if v not in index:
            visit(v)
    return out
