"""hiso: scalar-only federated zeroth-order optimisation (HiSo, DeComFL) and its benchmark.

Where things live:
    protocol.py    wire messages (seeds + scalars) and the round log
    perturb.py     seeded in-place perturbation streams (no d-sized buffer)
    estimators.py  forward / central ZO directional derivatives
    curvature.py   Identity (DeComFL), Diagonal (HiSo), LayerScalar, BlockDiagonal, Oracle
    federation.py  server, clients, catch-up replay, aggregation, the round loop
    run.py         one config -> metrics.csv + run.json (resumable); CLI in __main__.py
    tasks/         quadratic (synthetic spectrum), digits (federated CNN)
"""
__version__ = "0.1.0"
