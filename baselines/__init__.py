"""Baselines, one module each; importing this package registers them (hiso.methods.register_method).

Adding a baseline = one new module here + its name in the import line below (or `register_method` from
anywhere: see README, "Adding a baseline").
"""
from . import fedavg, fedkseed, fedzo, mezo  # noqa: F401
