"""Small stand-ins for the hub's models and data sets, for offline rehearsals of the GPU tiers and for tests.

`write_mirror(root)` fills a hub mirror (the layout of hiso/hub.py) with
- every hub data set the suite registers, as a `datasets.DatasetDict` under `root/data/<repo>/<config>/`: the
  same repositories, configs (`wsc.fixed` included), splits, feature types and ClassLabel names as the hub
  copies, GLUE/SuperGLUE test labels of -1, SQuAD's `answers` as a {text, answer_start} sequence.  Only the
  text is made up: short sentences whose words carry the label, so that a few rounds of training move the metric;
- every hub model, as a randomly initialised model of the same architecture class (OPTForCausalLM,
  LlamaForCausalLM; 2 layers, width 64, 2048 positions) with the SmolLM2 tokenizer, saved with
  `save_pretrained` so that runs load it through the same `from_pretrained` path as the real weights.
Its hub-lock.json records every entry as a fixture, and run.json copies that lock: a rehearsal's results
cannot pass for real ones.

    python -m hiso fixtures --to DIR    # then: python -m hiso run --hub-mirror DIR ...
"""
from __future__ import annotations

import json
from pathlib import Path

BOOL = ["False", "True"]
LABELS = {
    ("nyu-mll/glue", "sst2"): ["negative", "positive"],
    ("nyu-mll/glue", "qqp"): ["not_duplicate", "duplicate"],
    ("aps/super_glue", "rte"): ["entailment", "not_entailment"],
    ("aps/super_glue", "cb"): ["entailment", "contradiction", "neutral"],
    ("aps/super_glue", "boolq"): BOOL,
    ("aps/super_glue", "wic"): BOOL,
    ("aps/super_glue", "wsc.fixed"): BOOL,
    ("aps/super_glue", "multirc"): BOOL,
}
SPLITS = {"nyu-mll/glue": {"train": 96, "validation": 48, "test": 16},
          "aps/super_glue": {"train": 96, "validation": 48, "test": 16},
          "rajpurkar/squad": {"train": 64, "validation": 32}}
GOOD, BAD = ["wonderful", "moving", "sharp", "warm"], ["dreadful", "dull", "clumsy", "cold"]
COLOURS = ["red", "blue", "green", "white", "black", "yellow"]


def _row(config: str, i: int, y: int) -> dict:
    """One example of a GLUE/SuperGLUE config with label y (words that carry y, so training can learn it)."""
    w = (GOOD if y else BAD)[i % 4]
    if config == "sst2":
        return {"sentence": f"a {w} film , number {i} ", "label": y, "idx": i}
    if config == "qqp":
        q2 = f"what is the way to cook rice {i}?" if y else f"where can I buy a {w} car {i}?"
        return {"question1": f"how do I cook rice {i}?", "question2": q2, "label": y, "idx": i}
    if config in ("rte", "cb"):
        hyp = ["A cat sat on a mat.", "No cat was ever there.", "The cat may like fish."][y]
        return {"premise": f"The cat {i} sat on the mat near the door.", "hypothesis": hyp, "label": y, "idx": i}
    if config == "boolq":
        return {"question": f"is the sky {w} on day {i}", "passage": f"On day {i} the sky was {w if y else 'grey'}.",
                "label": y, "idx": i}
    if config == "wic":
        s2 = "The bank by the river flooded." if y else "The bank lends money."
        return {"word": "bank", "sentence1": f"We sat by the bank of river {i}.", "sentence2": s2,
                "start1": 13, "start2": 4, "end1": 17, "end2": 8, "label": y, "idx": i}
    if config == "wsc.fixed":
        pron = "he" if y else "it"
        return {"text": f"Mark told Pete {i} lies because {pron} was jealous.", "span1_index": 0,
                "span2_index": 6, "span1_text": "Mark", "span2_text": pron, "label": y, "idx": i}
    if config == "multirc":
        ans = "the capital" if y else "a river"
        return {"paragraph": f"Paris {i} is the capital of France.", "question": "What is Paris?", "answer": ans,
                "label": y, "idx": {"paragraph": i, "question": 0, "answer": i}}
    raise KeyError(config)


def _features(repo: str, config: str | None):
    from datasets import ClassLabel, Features, Sequence, Value
    s, i32 = Value("string"), Value("int32")
    if repo == "rajpurkar/squad":
        return Features({"id": s, "title": s, "context": s, "question": s,
                         "answers": Sequence({"text": s, "answer_start": i32})})
    fields = {"sst2": {"sentence": s}, "qqp": {"question1": s, "question2": s},
              "rte": {"premise": s, "hypothesis": s}, "cb": {"premise": s, "hypothesis": s},
              "boolq": {"question": s, "passage": s},
              "wic": {"word": s, "sentence1": s, "sentence2": s, "start1": i32, "start2": i32, "end1": i32,
                      "end2": i32},
              "wsc.fixed": {"text": s, "span1_index": i32, "span2_index": i32, "span1_text": s, "span2_text": s},
              "multirc": {"paragraph": s, "question": s, "answer": s}}[config]
    idx = {"paragraph": i32, "question": i32, "answer": i32} if config == "multirc" else i32
    return Features({**fields, "idx": idx, "label": ClassLabel(names=LABELS[(repo, config)])})


def _squad_row(i: int) -> dict:
    c = COLOURS[i % len(COLOURS)]
    context = f"Item {i} is {c}. Paris is the capital of France."
    return {"id": f"{i:08x}", "title": "Colours", "context": context, "question": f"What colour is item {i}?",
            "answers": {"text": [c, c], "answer_start": [context.index(c)] * 2}}


def dataset(repo: str, config: str | None):
    """The fixture DatasetDict of one hub data set."""
    from datasets import Dataset, DatasetDict
    feats = _features(repo, config)
    out = {}
    for split, n in SPLITS[repo].items():
        if repo == "rajpurkar/squad":
            rows = [_squad_row(i) for i in range(n)]
        else:
            k = len(LABELS[(repo, config)])
            rows = [_row(config, i, i % k) for i in range(n)]
            if split == "test":  # GLUE / SuperGLUE hide their test labels
                rows = [{**r, "label": -1} for r in rows]
        out[split] = Dataset.from_list(rows, features=feats)
    return DatasetDict(out)


def sources() -> list[tuple[str, str | None]]:
    """(repo, config) of every hub data set a registered task reads."""
    from .text import HUB, SQUAD
    return [*HUB.values(), SQUAD]


FIXTURE = "fixture: random weights / made-up rows in the hub schema"


def write_model(repo: str, path: Path) -> None:
    """A random model of the repo's architecture class, saved with its tokenizer (atomically)."""
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    from ..io import build_dir
    from ..models import _tiny, smollm2_tokenizer_dir
    kind = "opt" if repo.startswith("facebook/opt") else "llama"

    hf_logging.disable_progress_bar()

    def build(tmp: Path):
        tok = AutoTokenizer.from_pretrained(smollm2_tokenizer_dir())
        _tiny(kind, len(tok), seed=0, max_positions=2048).save_pretrained(tmp)
        tok.save_pretrained(tmp)
    build_dir(path, build)


def write_mirror(root: str | Path) -> list[Path]:
    """Write every hub data set's and every hub model's fixture into a hub mirror at `root` (kept if present)."""
    from ..hub import LOCK, data_dir, model_dir, save_atomically
    from ..io import atomic_write
    from ..models import MODELS
    root = Path(root)
    written, lock = [], {"models": {}, "datasets": {}}
    for repo, config in sources():
        path = data_dir(root, repo, config)
        if not path.exists():
            save_atomically(dataset(repo, config), path)
        lock["datasets"][f"{repo}/{config or 'default'}"] = FIXTURE
        written.append(path)
    for spec in MODELS.values():
        if spec.hub and not spec.packaged:
            write_model(spec.hub, model_dir(root, spec.hub))
            lock["models"][spec.hub] = FIXTURE
            written.append(model_dir(root, spec.hub))
    atomic_write(root / LOCK, json.dumps(lock, indent=1, sort_keys=True) + "\n")
    return written
