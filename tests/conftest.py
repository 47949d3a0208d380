import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import pytest  # noqa: E402

import hiso  # noqa: E402, F401  (first: pins the CPU numerics before torch loads, as every entry point does)
from hiso.config import load_config  # noqa: E402

hiso.numerics.apply_torch(1)


def numerics_lines() -> list[str]:
    """Which CPU and numerics this test session ran on: the golden runs' bits were compared there."""
    state = hiso.numerics.state()
    cpu = state["cpu"]
    return [f"cpu: {cpu['model']} ({cpu['vendor']}; {' '.join(cpu['flags'])})",
            f"numerics: {state['mode']}, ATen {state['aten_capability']}, oneDNN "
            f"{'on' if state['mkldnn_enabled'] else 'off'}, OpenBLAS {state['blas']['architecture']}, "
            f"bit-identical across CPUs: {state['bit_identical_across_cpus']}"]


def pytest_terminal_summary(terminalreporter):
    """Printed at the end of every test log, -q included (CI's too)."""
    for line in numerics_lines():
        terminalreporter.write_line(line)


def workflow_script(name: str):
    """workflows/scripts/<name>.py as a module (the scripts are not a package)."""
    import importlib.util
    from pathlib import Path
    spec = importlib.util.spec_from_file_location(name, Path(__file__).resolve().parents[1] / "workflows" / "scripts"
                                                  / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make_config(**sections):
    """A validated config from keyword sections, e.g. make_config(task={...}, federation={...})."""
    data = {"run": {"progress": False, "eval_every": 10, "checkpoint_every": 0}}
    for k, v in sections.items():
        if isinstance(v, dict) and isinstance(data.get(k), dict):
            data[k] = {**data[k], **v}
        else:
            data[k] = v
    return load_config(data=data)


@pytest.fixture
def cfg_factory():
    return make_config
