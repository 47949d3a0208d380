"""Task registry: a task supplies the trainable tensors, client batches, the loss and the evaluation.

A task class has an `Options` dataclass (validated from the config's `task:` section) and is built as
`Task(options, num_clients=M, seed=s)`.  Interface used by the engine:

    params() -> list[Tensor]            the trainable tensors of the working model (fp32)
    batch(client, rng, size)            a minibatch of that client's private data
    loss(batch) -> float                the training loss at the current params (no grad)
    evaluate(split) -> dict[str, float] metrics on "test" (or "dev"); `metric` names the headline one
    hessian_diagonal() / hessian()      (synthetic problems) the true curvature, for the Oracle
"""
from __future__ import annotations

from .digits import Digits
from .quadratic import Quadratic
from .text import TASKS as TEXT_TASKS
from .text import text_task

TASKS = {"quadratic": Quadratic, "digits": Digits, **{name: text_task(name) for name in [*TEXT_TASKS, "squad"]}}


def register_task(name: str, cls) -> None:
    """Make a task class available to configs under `task.name: <name>`."""
    if name in TASKS and TASKS[name] is not cls:
        raise ValueError(f"task {name!r} is already registered")
    TASKS[name] = cls


def check_memory(cls, opts, num_clients: int) -> None:
    """Refuse, with the config, a task whose data cannot fit in this machine's memory (a task declares its size
    with `memory_bytes(opts, num_clients)`), before any run folder exists."""
    import os

    from ..checks import ConfigError
    need = cls.memory_bytes(opts, num_clients) if hasattr(cls, "memory_bytes") else 0
    if need > os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"):
        raise ConfigError(f"task {cls.__name__.lower()} with federation.num_clients={num_clients:,}: its data needs "
                          f"{need / 2**30:,.0f} GiB, more than this machine's memory; lower the task's size or "
                          "federation.num_clients")
