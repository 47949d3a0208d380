"""One run, on either exchange engine: `run(cfg, out_dir)`.

The simulator's runner is hiso/runner.py (the round loop, checkpoints, run.json).  With
`federation.engine: flower` the Flower deployment (hiso/flower/deploy.py) starts a SuperLink and SuperNodes and
runs that same runner inside its ServerApp: the deployment wraps the runner from above, and the runner never
imports it.
"""
from __future__ import annotations

from pathlib import Path

from .config import Config
from .runner import (  # noqa: F401  (the runner's API, re-exported)
    RunFailed,
    RunResult,
    backend_state,
    build_federation,
    provenance,
)
from .runner import run as run_simulator


def run(cfg: Config, out_dir: str | Path | None = None, **kwargs) -> RunResult:
    """Run (or resume) one configuration and return its metrics (hiso/runner.py's `run` documents the
    arguments).  With federation.engine flower, the clients run in Flower SuperNodes that this call starts."""
    if cfg.federation.engine == "flower" and not kwargs.get("deployed"):
        from .flower.deploy import deploy
        return deploy(cfg, out_dir, replace_different=kwargs.get("replace_different", False),
                      restart=kwargs.get("restart", False))
    return run_simulator(cfg, out_dir, **kwargs)
