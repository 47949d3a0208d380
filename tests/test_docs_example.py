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
