"""hiso: scalar-only federated zeroth-order optimisation (HiSo, DeComFL) and its benchmark.

Where things live:
    protocol.py    wire messages (seeds + scalars; vectors for the baselines) and the round log record
    perturb.py     seeded in-place perturbation streams (no d-sized buffer)
    estimators.py  forward / central ZO directional derivatives
    curvature/     Identity (DeComFL), Diagonal (HiSo), LayerScalar, BlockDiagonal, Oracle; controls
    server.py      the round log, upload validation, aggregation, the replay rule (apply_record)
    federation.py  clients, catch-up, the round loop
    methods.py     the method registry (baselines/ registers FedAvg, FedZO, MeZO, FedKSeed, ...)
    models.py      model registry (hub, packaged SmolLM2, tiny random) and LoRA
    tasks/         quadratic (synthetic spectrum), digits (federated CNN), text (LM classification, SQuAD)
    run.py         one config -> metrics.csv + run.json (resumable); CLI in __main__.py
    results.py     reading runs back for tables and figures
    numerics.py    portable CPU numerics: the same bits on any x86-64 CPU (set here, before torch)
"""
__version__ = "0.1.0"

from . import numerics as _numerics  # pins the CPU kernels (HISO_NUMERICS) before anything imports torch

_numerics.setup()
