"""The contract between the runner and a method: the `Method` protocol it implements and the `RoundRow` every
`run_round` returns (the runner adds evaluation metrics and wall_seconds, and writes the rows to metrics.csv)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import torch


@dataclass
class RoundRow:
    """One round as measured by the method; `extra` holds method-specific columns (they follow the fixed ones)."""

    round: int
    train_loss: float
    bytes_up: int  # wire bytes, all sampled clients
    bytes_up_scalars: int  # of which payload (scalars or vector entries)
    bytes_down: int
    bytes_down_seeds: int  # of which this round's shared seeds
    bytes_down_catchup: int  # of which replayed log records
    forward_passes: int
    rejected: int = 0  # uploads refused by validation
    accepted: int = 0
    extra: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "extra"}
        return {**d, **self.extra}


@runtime_checkable
class Method(Protocol):
    """What `hiso.run` needs from a method object (built by the registry in hiso/methods.py)."""

    @property
    def rounds_done(self) -> int: ...

    def run_round(self) -> dict: ...  # RoundRow(...).as_dict()

    def load_server_model(self) -> None: ...  # the global model into the task's working model, for evaluation

    def global_params(self) -> list[torch.Tensor]: ...

    def state_dict(self) -> dict: ...  # everything needed to resume exactly

    def load_state_dict(self, sd: dict) -> None: ...
