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
from .squad import Squad
from .text import TASKS as TEXT_TASKS
from .text import text_task

TASKS = {"quadratic": Quadratic, "digits": Digits, **{name: text_task(name) for name in TEXT_TASKS}, "squad": Squad}


def register_task(name: str, cls) -> None:
    """Make a task class available to configs under `task.name: <name>`."""
    if name in TASKS and TASKS[name] is not cls:
        raise ValueError(f"task {name!r} is already registered")
    TASKS[name] = cls


def usable_memory() -> tuple[int, str]:
    """(bytes, what bounds them): the least of physical memory, the address-space limit (ulimit -v) and the
    cgroup's memory limit (containers, SLURM jobs): what this process may really use."""
    import os
    import resource
    bounds = [(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"), "this machine's memory")]
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft != resource.RLIM_INFINITY:
        bounds.append((soft, "the address-space limit (ulimit -v)"))
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = open(path).read().strip()  # noqa: SIM115 - one line
        except OSError:
            continue
        if text.isdigit() and int(text) < 2**60:  # "max" or a huge number: no limit
            bounds.append((int(text), "the cgroup's memory limit"))
        break
    return min(bounds)


def check_memory(cls, opts, num_clients: int) -> None:
    """Refuse, with the config, a task whose data cannot fit in the memory this process may use (a task declares
    its size with `memory_bytes(opts, num_clients)`), before any run folder exists."""
    from ..checks import ConfigError
    need = cls.memory_bytes(opts, num_clients) if hasattr(cls, "memory_bytes") else 0
    have, bound = usable_memory()
    if need > have:
        raise ConfigError(f"task {cls.__name__.lower()} with federation.num_clients={num_clients:,}: its data needs "
                          f"{need / 2**30:,.0f} GiB, more than the memory this process may use (bounded by {bound}: "
                          f"{have / 2**30:,.1f} GiB); lower the task's size or federation.num_clients")
