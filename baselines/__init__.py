"""Baselines, one module each; importing this package registers them (hiso.methods.register_method).
hiso finds the package through the `hiso.methods` entry point in pyproject.toml.

Adding a baseline = one new module here + its name in the import line below (docs/extending.md).
"""
from . import fedavg, fedkseed, fedzo, mezo  # noqa: F401
