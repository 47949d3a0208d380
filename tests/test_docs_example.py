"""The worked example of adding a baseline (docs/extending.md) runs as written."""
import re
import types
from pathlib import Path

from hiso.config import load_config
from hiso.methods import METHODS
from hiso.run import run

PAGE = Path(__file__).resolve().parents[1] / "docs" / "extending.md"


def test_readme_baseline_example_runs():
    code = re.search(r"Worked example, `baselines/signsgd.py`:\n\n```python\n(.*?)```", PAGE.read_text(), re.S).group(1)
    import baselines  # noqa: F401  (the example imports from the package)
    mod = types.ModuleType("baselines.signsgd")
    mod.__package__ = "baselines"
    try:
        exec(compile(code, "signsgd.py", "exec"), mod.__dict__)
        cfg = load_config(data={"method": "signfed", "method_options": {"server_lr": 0.01},
                                "task": {"name": "quadratic", "dim": 50}, "federation": {"rounds": 20, "lr": 0.1},
                                "run": {"progress": False, "eval_every": 10}})
        sub = run(cfg).metrics["rel_suboptimality"].dropna()
        assert sub.iloc[-1] < sub.iloc[0]
    finally:
        METHODS.pop("signfed", None)


def test_curvature_kind_example_runs_and_replays():
    """The worked curvature kind runs with every client replaying the log into its own replica: a replica or
    curvature unequal to the server's would raise ReplayMismatch at the client's next catch-up."""
    code = re.search(r"applies HiSo's learned diagonal half-way \(z = H\^-1/4 u\):\n\n```python\n(.*?)```",
                     PAGE.read_text(), re.S).group(1)
    from hiso.curvature import KINDS
    try:
        exec(compile(code, "half_whitened.py", "exec"), {})
        cfg = load_config(data={"method": "hiso", "curvature": {"kind": "half_whitened"},
                                "task": {"name": "quadratic", "dim": 50},
                                "federation": {"rounds": 30, "lr": 0.02, "verify_replay": True},
                                "run": {"progress": False, "eval_every": 10}})
        result = run(cfg)
        assert type(result.federation.server.curvature).__name__ == "HalfWhitened"
        sub = result.metrics["rel_suboptimality"].dropna()
        assert sub.iloc[-1] < sub.iloc[0]
        assert (result.metrics["replay_max_abs_diff"] <= 1e-6).all()
    finally:
        KINDS.pop("half_whitened", None)
