"""Where the registries are read: tasks, models, methods (with every `hiso.methods` entry-point package, such as
`baselines`) and curvature kinds.  The config, the planner, the results and the generated docs look names up
here; the registered packages import only what lies below them (hiso/checks.py for validation), never this
module or the config, so the import graph has no circle (tests/test_imports.py).
"""
from __future__ import annotations


def tasks() -> dict:
    from .tasks import TASKS
    return TASKS


def methods() -> dict:
    """Every registered method, the entry-point packages' included (loaded once)."""
    from .methods import METHODS, load_baselines
    load_baselines()
    return METHODS


def models() -> dict:
    from .models import MODELS
    return MODELS


def curvature_kinds() -> dict:
    from .curvature import KINDS
    return KINDS
