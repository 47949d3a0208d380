import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import pytest  # noqa: E402

import hiso  # noqa: E402, F401  (first: pins the CPU numerics before torch loads, as every entry point does)
from hiso.config import load_config  # noqa: E402

hiso.numerics.apply_torch(1)


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
