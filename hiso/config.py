"""Run configuration: plain dataclasses, validated strictly before any compute.

Unknown keys and wrong types raise ConfigError naming the key (with a suggestion for near-misses).
YAML floats such as 1e-3 (which PyYAML reads as strings) are read as floats.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from .checks import ConfigError, build, finite_positive, load_yaml, require  # noqa: F401  (re-exported: the config's API)


@dataclass
class FederationConfig:
    num_clients: int = 6  # M: clients holding a data shard
    clients_per_round: int = 2  # m: clients sampled per round (from the run seed and the round)
    rounds: int = 200  # the round budget
    local_steps: int = 1  # tau
    perturbations: int = 5  # P
    mu: float = 1e-3  # perturbation size of the finite differences
    lr: float = 1e-4  # step size
    difference: Literal["forward", "central"] = "forward"  # forward: P + 1 passes, central: 2P
    aggregator: Literal["mean", "median", "trimmed_mean", "clipped_mean"] = "mean"  # hiso/aggregators.py
    trim_fraction: float = 0.1  # trimmed_mean: share dropped at each end per coordinate
    clip_factor: float = 3.0  # clipped_mean: each upload's norm <= clip_factor x the round's smallest
    max_abs_scalar: float = 1e6  # uploads with a larger |scalar| are rejected
    batch_size: int = 32  # examples per client per local step
    verify_replay: bool = False  # every client keeps a replica and really replays (memory grows with M)
    cache_directions: bool = False  # keep the P directions of a step (P x d floats) instead of regenerating
    mu_scale: Literal["none", "rms"] = "none"  # rms: mu / RMS(H^-1/2), the perturbation norm of isotropic u
    weight_decay: float = 0.0  # SGD weight decay: x <- x - lr * (update + weight_decay * x) (the authors' 5e-4)
    faulty_clients: int = 0  # clients (chosen by the seed) that corrupt every upload (hiso/faults.py)
    fault: Literal["nan", "huge", "random_scale", "sign_flip", "stale"] = "random_scale"  # what they send
    fault_scale: float = 1.0e5  # random_scale / sign_flip: the factor
    engine: Literal["simulator", "flower"] = "simulator"  # flower: clients in Flower SuperNodes (hiso/flower)
    supernodes: int = 0  # flower: SuperNodes the runner starts on 127.0.0.1 (0: one per client)
    round_timeout: float = 600.0  # flower: seconds a round waits for its clients; late ones are dropped
    dropped_from: str | None = None  # simulator: a deployed run's metrics.csv; its dropped_clients never upload


@dataclass
class CurvatureConfig:
    kind: str | None = None  # a registered kind (hiso/curvature: KINDS); default: the method's
    beta: float = 0.95  # weight on the old H
    eps: float = 1e-8
    feed: Literal["last", "every"] = "last"
    moment: Literal["square_of_mean", "mean_of_squares"] = "square_of_mean"
    block_size: int = 8
    rmsprop_power: float = 0.5  # kind rmsprop: applied update H^-power * Delta x
    floor: float = 1e-3  # kind stein: H = max(M, floor * RMS(M))
    damping: float = 0.1  # kind damped_oracle: H = diag(A) + damping * lambda_max
    mix: float = 0.5  # kind mixed: H = (1 - mix) * diagonal + mix * its mean (mix 0: HiSo, 1: GlobalScalar-like)


@dataclass
class RunOptions:
    eval_every: int = 10  # rounds between evaluations (the last round is always evaluated)
    # the split every evaluation reads: test, or dev (a held-out part of the training data) for tuning runs;
    # the quadratic has no data, so every split is its objective (its validation is another seed's instance)
    eval_split: Literal["test", "dev"] = "test"
    # with eval_split test: every evaluation also reads the dev split (columns dev_loss, dev_accuracy, ...), so
    # that a run's checkpoint can be selected on dev and its test metric reported there (early stopping)
    also_dev: bool = False
    checkpoint_every: int = 50  # rounds between checkpoints (0: only at the end)
    checkpoint_minutes: float = 0.0  # also checkpoint when this much wall time passed since the last (0: off)
    # keep the final checkpoint once the run has ended (false: delete it; a longer budget then recomputes from
    # round 0, and figures that read checkpoints (histograms, zeta) cannot use the run)
    keep_checkpoint: bool = True
    threads: int = 0  # torch threads (0: leave torch's default)
    diverge_factor: float = 1e4  # status diverged once train loss > factor * first-round loss (0: off)
    progress: bool = True
    stop_target: float | None = None  # end the run once the task's metric reaches this value (null: never)
    stop_patience: int = 0  # end it after this many evaluations without a new best (by > 1e-6 relative; 0: never)
    # move every entry of the initial trainable model this many floats towards +inf: a rounding twin of the run
    # (hiso/noise.py measures how far a last-bit change moves the outcome)
    init_ulps: int = 0


@dataclass
class PerturbConfig:  # how directions are laid out and drawn (hiso/layout.py); part of the stream's fingerprint
    layout: Literal["auto", "tensors", "flat"] = "auto"  # auto: flat on an accelerator, tensors on the CPU
    chunk: int | None = None  # entries per piece, a multiple of 16 (null: 2^18 on tensors, 2^26 on flat)
    generator: Literal["native", "portable"] = "native"  # portable: the same directions on any device and chunk


@dataclass
class Config:
    name: str = "run"  # the run's name (default output folder results/runs/<name>)
    seed: int = 0  # every random draw derives from it (clients, seeds, data split, init)
    method: str = "hiso"  # a registered method (hiso.methods.METHODS)
    method_options: dict = field(default_factory=dict)  # validated by the method's Options
    task: dict = field(default_factory=lambda: {"name": "quadratic"})  # task.name and the task's options
    federation: FederationConfig = field(default_factory=FederationConfig)
    curvature: CurvatureConfig = field(default_factory=CurvatureConfig)
    run: RunOptions = field(default_factory=RunOptions)
    perturb: PerturbConfig = field(default_factory=PerturbConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def hash(self) -> str:
        """Identity of what is computed (NOT_COMPUTED run options excluded; keys added later at their defaults too,
        so existing runs keep their identity)."""
        d = canonical(self.to_dict())
        for key in NOT_COMPUTED:
            d["run"].pop(key)
        return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]


# run options that change what is shown or kept on disk, not what is computed: no part of a run's identity
NOT_COMPUTED = ("progress", "keep_checkpoint", "checkpoint_minutes")

# options added after results existed: at these defaults a config is the one it was before they existed
LATER_DEFAULTS = {("run", "eval_split"): "test", ("run", "also_dev"): False, ("task", "dev_fraction"): 0.0,
                  ("curvature", "damping"): 0.1, ("curvature", "floor"): 1e-3, ("federation", "mu_scale"): "none",
                  ("curvature", "mix"): 0.5,
                  ("federation", "weight_decay"): 0.0, ("task", "template"): "suite", ("task", "loss"): "answer",
                  ("task", "decoding"): "greedy", ("task", "max_new_tokens"): 16, ("task", "sampling"): "random",
                  ("federation", "clip_factor"): 3.0, ("federation", "faulty_clients"): 0,
                  ("federation", "fault"): "random_scale", ("federation", "fault_scale"): 1.0e5,
                  ("run", "stop_target"): None, ("run", "stop_patience"): 0,
                  ("federation", "engine"): "simulator", ("federation", "supernodes"): 0,
                  ("federation", "round_timeout"): 600.0, ("federation", "dropped_from"): None,
                  ("perturb", "layout"): "auto", ("perturb", "chunk"): None,
                  ("perturb", "generator"): "native", ("task", "eval_batch_size_cuda"): 256,
                  ("task", "matmul_precision"): "highest", ("task", "deterministic"): True,
                  ("run", "init_ulps"): 0}


def canonical(d: dict) -> dict:
    """A config dict without the later-added options that hold their defaults (a copy)."""
    d = json.loads(json.dumps(d, default=str))
    for (section, key), default in LATER_DEFAULTS.items():
        if d.get(section, {}).get(key, default) == default:
            d.get(section, {}).pop(key, None)
    if d.get("perturb") == {}:  # a section added later, at its defaults
        d.pop("perturb")
    return d


def task_options(cfg: Config):
    """The validated options dataclass of the config's task."""
    from .registry import tasks
    TASKS = tasks()
    data = dict(cfg.task)
    name = data.pop("name", None)
    if name not in TASKS:
        raise ConfigError(f"task.name: {name!r} is not a registered task (known: {', '.join(sorted(TASKS))})")
    opts = build(TASKS[name].Options, data, "task")
    check = getattr(TASKS[name], "check_options", None)
    if check is not None:
        try:
            check(opts)
        except ValueError as e:
            raise ConfigError(str(e)) from None
    return TASKS[name], opts


def method_options(cfg: Config):
    """The method's spec and its validated options (None when the method takes none)."""
    from .registry import methods
    METHODS = methods()
    if cfg.method not in METHODS:
        raise ConfigError(f"method: {cfg.method!r} is not a registered method (known: {', '.join(sorted(METHODS))})")
    spec = METHODS[cfg.method]
    if spec.Options is None:
        if cfg.method_options:
            raise ConfigError(f"method_options: method {cfg.method} takes no options, got {sorted(cfg.method_options)}")
        return spec, None
    return spec, build(spec.Options, cfg.method_options, "method_options")


# Upper bounds: past them a config is a typo, and would try to allocate far more memory than exists.
LIMITS = {"federation.num_clients": 100_000, "federation.batch_size": 65_536, "federation.perturbations": 10_000,
          "federation.local_steps": 10_000, "federation.rounds": 100_000_000}


def _methods_with(flag: str) -> str:
    """The registered methods whose MethodSpec has `flag` set, for a refusal's message."""
    from .registry import methods
    return ", ".join(sorted(n for n, m in methods().items() if getattr(m, flag)))


def _check_ranges(cfg: Config) -> None:
    f = cfg.federation
    require("name", cfg.name, bool(re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9._@+-]*", cfg.name)),
            "one folder name (letters, digits and ._@+-, not starting with . or -): it names results/runs/<name>")
    require("seed", cfg.seed, 0 <= cfg.seed < 2**32, "in [0, 2^32)")
    require("run.stop_patience", cfg.run.stop_patience, cfg.run.stop_patience >= 0, ">= 0")
    require("run.init_ulps", cfg.run.init_ulps, 0 <= cfg.run.init_ulps <= 16, "in [0, 16] (ulps, a rounding-level nudge)")
    if cfg.run.stop_target is not None:
        require("run.stop_target", cfg.run.stop_target, math.isfinite(cfg.run.stop_target), "a finite number")
    for key, limit in LIMITS.items():
        value = getattr(f, key.split(".")[1])
        require(key, value, value <= limit, f"<= {limit:,} (a larger value is almost surely a typo)")
    positive = {"federation.num_clients": f.num_clients, "federation.rounds": f.rounds,
                "federation.local_steps": f.local_steps, "federation.perturbations": f.perturbations,
                "federation.batch_size": f.batch_size, "federation.mu": f.mu, "federation.lr": f.lr,
                "federation.max_abs_scalar": f.max_abs_scalar, "run.eval_every": cfg.run.eval_every}
    for key, v in positive.items():
        require(key, v, v > 0, "> 0")
    for key, v in {"federation.mu": f.mu, "federation.lr": f.lr, "run.diverge_factor": cfg.run.diverge_factor,
                   "curvature.beta": cfg.curvature.beta}.items():
        require(key, v, math.isfinite(v), "a finite number")
    c, r = cfg.curvature, cfg.run
    require("federation.clients_per_round", f.clients_per_round, 1 <= f.clients_per_round <= f.num_clients,
            f"in [1, {f.num_clients}]")
    require("federation.trim_fraction", f.trim_fraction, 0 <= f.trim_fraction < 0.5, "in [0, 0.5)")
    require("curvature.beta", c.beta, 0 <= c.beta < 1, "in [0, 1)")
    require("curvature.eps", c.eps, c.eps >= 0 and math.isfinite(c.eps), "finite and >= 0")
    require("run.diverge_factor", r.diverge_factor, r.diverge_factor >= 0, ">= 0")
    if r.also_dev:
        opts = task_options(cfg)[1]
        has_dev = getattr(opts, "dev_size", 1) > 0 and getattr(opts, "dev_fraction", 1) > 0
        require("run.also_dev", r.also_dev, r.eval_split == "test" and has_dev,
                "true only with run.eval_split: test and a dev split (task.dev_size or task.dev_fraction > 0)")
    require("run.checkpoint_every", r.checkpoint_every, r.checkpoint_every >= 0, ">= 0")
    require("run.checkpoint_minutes", r.checkpoint_minutes, 0 <= r.checkpoint_minutes < math.inf, "finite and >= 0")
    k = cfg.perturb.chunk
    require("perturb.chunk", k, k is None or (16 <= k <= 2**31 and k % 16 == 0), "null or a multiple of 16 in [16, 2^31]")
    spec, _ = method_options(cfg)
    require("federation.weight_decay", f.weight_decay, f.weight_decay >= 0 and math.isfinite(f.weight_decay),
            "finite and >= 0")
    if f.weight_decay and not spec.weight_decay:
        supported = _methods_with("weight_decay")
        raise ConfigError(f"federation.weight_decay: method {cfg.method} does not implement weight decay, got "
                          f"{f.weight_decay} (methods that do: {supported})")
    from .aggregators import check as check_aggregator
    why = check_aggregator(f.aggregator, f.clients_per_round, f.trim_fraction)
    require("federation.aggregator", f.aggregator, why is None, f"robust at {f.clients_per_round} clients per round: {why}")
    require("federation.faulty_clients", f.faulty_clients, 0 <= f.faulty_clients <= f.num_clients,
            f"in [0, num_clients={f.num_clients}]")
    finite_positive("federation.fault_scale", f.fault_scale)
    finite_positive("federation.clip_factor", f.clip_factor)
    if (f.faulty_clients or f.aggregator != "mean") and not spec.faults:
        supported = _methods_with("faults")
        raise ConfigError(f"federation.faulty_clients / federation.aggregator: method {cfg.method} aggregates "
                          f"without them, got {f.faulty_clients} / {f.aggregator!r} (methods that honour them: "
                          f"{supported})")
    if f.engine == "flower":
        if not spec.deployable:
            raise ConfigError(f"federation.engine: method {cfg.method} runs only in the simulator, got 'flower' "
                              f"(methods that deploy: {_methods_with('deployable')})")
        require("federation.faulty_clients", f.faulty_clients, f.faulty_clients == 0,
                "0 with engine flower (faults are injected by the simulator)")
        require("federation.supernodes", f.supernodes, 0 <= f.supernodes <= min(f.num_clients, 64),
                f"in [0, min(num_clients={f.num_clients}, 64)] (0: one per client)")
        finite_positive("federation.round_timeout", f.round_timeout)
    if f.dropped_from is not None:
        import os
        require("federation.dropped_from", f.dropped_from, f.engine == "simulator" and os.path.isfile(f.dropped_from),
                "an existing metrics.csv of a deployed run, with engine simulator")
        from .federation import dropped_clients
        try:
            dropped_clients(f.dropped_from, f.num_clients)
        except ValueError as e:
            raise ConfigError(f"federation.dropped_from: {e}") from None
    if cfg.curvature.kind is None:
        cfg.curvature.kind = spec.default_curvature or "identity"
    elif spec.fixed_curvature and cfg.curvature.kind != spec.default_curvature:
        raise ConfigError(f"method {cfg.method} is HiSo with {spec.default_curvature} curvature; curvature.kind="
                          f"{cfg.curvature.kind!r} contradicts it (use method: hiso to choose a curvature)")
    _check_curvature_kind(cfg)


def _check_curvature_kind(cfg: Config) -> None:
    """The chosen kind's own checks (hiso/curvature: `config_problem`), the first problem refused."""
    from .curvature import config_problem
    task_cls, _ = task_options(cfg)
    problem = config_problem(cfg, task_cls, CurvatureConfig())
    if problem:
        raise ConfigError(problem)


def set_dotted(data: dict, assignment: str) -> None:
    """Apply one `--set a.b.c=value` (value parsed as YAML) to a nested mapping."""
    if "=" not in assignment:
        raise ConfigError(f"--set expects key=value, got {assignment!r}")
    key, raw = assignment.split("=", 1)
    parts = key.strip().split(".")
    node = data
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ConfigError(f"--set {key}: '{p}' is not a section")
    value = load_yaml(raw, f"--set {key}", key=key.strip())
    if isinstance(value, dict) and isinstance(node.get(parts[-1]), dict):
        value = _merge(node[parts[-1]], value)  # --set federation={rounds: 3} sets rounds, keeps the rest
    node[parts[-1]] = value


def check_sets(assignments: list[str], flag: str = "--set") -> None:
    """Refuse one key set twice: the last would win without a word (a file's duplicate keys are refused too)."""
    seen: dict[str, str] = {}
    for a in assignments:
        key = a.split("=", 1)[0].strip()
        if key in seen:
            raise ConfigError(f"{flag} {key} is given twice ({seen[key]!r} and {a.split('=', 1)[-1]!r}); give it once")
        seen[key] = a.split("=", 1)[-1]


MAX_CONFIG_BYTES = 1_000_000  # a config over this is refused at once, before YAML reads it (seconds per MB)


def load_config(path: str | Path | None = None, overrides: list[str] = (), data: dict | None = None) -> Config:
    """Read a YAML config (or a mapping), apply --set overrides, validate everything."""
    raw: dict = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            kind = ("is a directory" if p.is_dir() else "is not a regular file (a FIFO, socket or device): save the "
                    "config to a file" if p.exists() else "does not exist")
            raise ConfigError(f"config file {p} {kind}")
        if p.stat().st_size > MAX_CONFIG_BYTES:
            raise ConfigError(f"config file {p} has {p.stat().st_size:,} bytes, more than a config's limit of "
                              f"{MAX_CONFIG_BYTES:,} (the suite's largest config is under 2,000): is it the right file?")
        try:
            text = p.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(f"config file {p} is not readable UTF-8 text ({type(e).__name__})") from None
        raw = load_yaml(text, str(p))
        if raw is None:
            raise ConfigError(f"config file {p} is empty (an empty file would silently run every default)")
        if not isinstance(raw, dict):
            raise ConfigError(f"config file {p} holds a {type(raw).__name__}, not a mapping of sections (task:, "
                              "federation:, ...)")
    if data is not None:
        raw = _merge(raw, data)
    for a in overrides:
        set_dotted(raw, a)
    cfg = build(Config, raw)
    task_cls, opts = task_options(cfg)
    cfg.task = {"name": cfg.task["name"], **dataclasses.asdict(opts)}  # resolved: defaults are part of the hash
    _check_ranges(cfg)
    from .tasks import check_memory
    check_memory(task_cls, opts, cfg.federation.num_clients)
    spec, mopts = method_options(cfg)
    if mopts is not None:
        cfg.method_options = dataclasses.asdict(mopts)
    if spec.check is not None:  # the method's own refusals (register_method(..., check=))
        try:
            spec.check(cfg, mopts)
        except ValueError as e:
            raise ConfigError(f"method {cfg.method}: {e}") from None
    return cfg


def _merge(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, v in b.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out
