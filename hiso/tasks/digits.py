"""Federated digits: scikit-learn's bundled 8x8 digits (an offline MNIST stand-in), a small CNN,
a Dirichlet(alpha) label split over clients and accuracy on a held-out stratified test split."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .. import streams
from .split import dirichlet_split


@dataclass
class DigitsOptions:
    alpha: float = 1.0  # Dirichlet concentration of the label split; .inf for IID
    test_fraction: float = 0.2
    channels: int = 4  # first conv layer width (the second has twice as many)
    dev_fraction: float = 0.0  # share of the training split held out as a dev split (step-size tuning)


class DigitsCNN(torch.nn.Module):
    def __init__(self, channels: int = 4):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(1, channels, 3, padding=1)
        self.conv2 = torch.nn.Conv2d(channels, 2 * channels, 3, padding=1)
        self.fc = torch.nn.Linear(2 * channels * 4, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)  # 4x4
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)  # 2x2
        return self.fc(x.flatten(1))


class Digits:
    Options = DigitsOptions
    metric = "accuracy"
    higher_is_better = True

    @classmethod
    def check_options(cls, o: DigitsOptions) -> None:
        from ..checks import finite_positive, require
        finite_positive("task.alpha", o.alpha, allow_inf=True)
        require("task.test_fraction", o.test_fraction, 0 < o.test_fraction < 1, "in (0, 1)")
        require("task.dev_fraction", o.dev_fraction, 0 <= o.dev_fraction < 1, "in [0, 1)")
        require("task.channels", o.channels, 1 <= o.channels <= 1024, "in [1, 1024]")

    def __init__(self, opts: DigitsOptions, num_clients: int, seed: int):
        from sklearn.datasets import load_digits  # 1.5 s to import: only digits runs pay it
        from sklearn.model_selection import train_test_split
        data = load_digits()
        x = torch.tensor(data.images / 16.0, dtype=torch.float32).unsqueeze(1)
        y = torch.tensor(data.target, dtype=torch.long)
        idx_train, idx_test = train_test_split(np.arange(len(y)), test_size=opts.test_fraction,
                                               stratify=data.target, random_state=seed)
        if not 0.0 <= opts.dev_fraction < 1.0:
            raise ValueError(f"task.dev_fraction must be in [0, 1), got {opts.dev_fraction}")
        self.x_dev = self.y_dev = None
        if opts.dev_fraction > 0:
            idx_train, idx_dev = train_test_split(idx_train, test_size=opts.dev_fraction,
                                                  stratify=data.target[idx_train], random_state=seed)
            self.x_dev, self.y_dev = x[idx_dev], y[idx_dev]
        self.x_train, self.y_train = x[idx_train], y[idx_train]
        self.x_test, self.y_test = x[idx_test], y[idx_test]
        rng = streams.rng(seed, streams.DIGITS_SPLIT)
        self.shards = dirichlet_split(self.y_train.numpy(), num_clients, opts.alpha, rng)
        torch.manual_seed(seed)
        self.model = DigitsCNN(opts.channels)
        self.num_clients = num_clients

    def params(self) -> list[torch.Tensor]:
        return [p for p in self.model.parameters() if p.requires_grad]

    def batch(self, client: int, rng: np.random.Generator, size: int):
        shard = self.shards[client]
        pick = rng.choice(shard, size, replace=len(shard) < size)
        return self.x_train[pick], self.y_train[pick]

    @torch.no_grad()
    def loss(self, batch) -> float:
        x, y = batch
        return float(F.cross_entropy(self.model(x), y))

    def grad_loss(self, batch) -> torch.Tensor:
        """Differentiable loss (first-order baselines and Hessian-vector-product diagnostics)."""
        x, y = batch
        return F.cross_entropy(self.model(x), y)

    @torch.no_grad()
    def evaluate(self, split: str = "test") -> dict[str, float]:
        """Accuracy and loss on the test split, or on the dev split (needs dev_fraction > 0)."""
        if split == "dev" and self.x_dev is None:
            raise ValueError("digits has no dev split: set task.dev_fraction > 0")
        x, y = (self.x_dev, self.y_dev) if split == "dev" else (self.x_test, self.y_test)
        logits = self.model(x)
        return {"accuracy": float((logits.argmax(1) == y).float().mean()),
                "test_loss": float(F.cross_entropy(logits, y))}
