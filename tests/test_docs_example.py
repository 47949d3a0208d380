"""The worked example of adding a baseline (docs/extending.md) runs as written."""
import re
from pathlib import Path

from hiso.config import load_config
from hiso.run import run

PAGE = Path(__file__).resolve().parents[1] / "docs" / "extending.md"


def test_the_baseline_example_in_the_guide_is_the_file_in_the_repository():
    """docs/extending.md shows baselines/zo_signsgd.py as it is (tests/test_zo_signsgd.py runs the file)."""
    code = re.search(r"checks that this copy is the file\):\n\n```python\n(.*?)```", PAGE.read_text(), re.S).group(1)
    assert code == (PAGE.parents[1] / "baselines" / "zo_signsgd.py").read_text()


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
