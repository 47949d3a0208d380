"""Baselines, one module each; importing this package imports every module in it, and each registers its methods
(hiso.methods.register_method).  hiso finds the package through the `hiso.methods` entry point in pyproject.toml.

Adding a baseline = one new module here (docs/extending.md): no list to edit.
"""
import importlib
import pkgutil

for _module in pkgutil.iter_modules(__path__):
    if not _module.name.startswith("_") and _module.name != "common":
        importlib.import_module(f"{__name__}.{_module.name}")
