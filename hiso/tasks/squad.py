"""SQuAD: extractive QA as generation on the text tasks' machinery (hiso/tasks/text.py), scored by token F1 and
exact match against the gold answers."""
from __future__ import annotations

import re
import string

import numpy as np
import torch
import torch.nn.functional as F

from .prompts import template
from .text import SQUAD, TaskDef, TextClassification, TextOptions, _hub, eval_batch_size, length_order

# --- SQuAD: extractive QA as generation, scored by token F1 -------------------------------------------

def normalize_answer(s: str) -> str:
    """SQuAD's official normalisation: lower case, no punctuation, no articles, single spaces."""
    s = "".join(ch for ch in s.lower() if ch not in set(string.punctuation))
    s = re.sub(r"\b(a|an|the)\b", " ", s)
    return " ".join(s.split())


def token_f1(prediction: str, gold: str) -> float:
    """SQuAD token-overlap F1 between one prediction and one gold answer."""
    from collections import Counter
    p, g = normalize_answer(prediction).split(), normalize_answer(gold).split()
    if not p or not g:
        return float(p == g)
    common = sum((Counter(p) & Counter(g)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(p), common / len(g)
    return 2 * precision * recall / (precision + recall)


class Squad(TextClassification):
    """SQuAD v1.1 as generation.  Loss (`task.loss`): cross-entropy over the gold answer's tokens (teacher
    forcing; only those positions' logits are computed), or over every token of prompt + answer (the authors'
    full-sentence loss; padding excluded).  Metric: token F1 (max over gold answers) and exact match of the
    decoded answer (`task.decoding`: greedy, or the authors' 2-beam sampling with top_p 0.3, seeded)."""

    metric = "f1"
    directions = {"exact_match": True}
    name = "squad"
    definition = TaskDef(_hub(*SQUAD))

    @classmethod
    def check_options(cls, opts: TextOptions) -> None:
        cls.check_common(opts)
        template(cls.name, opts.template)
        if opts.max_new_tokens < 1:
            raise ValueError(f"task.max_new_tokens must be >= 1, got {opts.max_new_tokens}")

    def split_labels(self) -> np.ndarray:
        return np.zeros(len(self.train), dtype=np.int64)  # no classes: alpha has nothing to skew (IID)

    def _encode(self, rows):
        t = self.template
        prompts = self.tok([t.prompt(r) for r in rows]).input_ids
        answers = self.tok([t.answer_prefix + r["answers"]["text"][0] for r in rows],
                           add_special_tokens=False).input_ids
        ids, n_answer = [], []
        for p, a in zip(prompts, answers):
            if self.opts.loss == "answer":
                a = a[: self.opts.max_new_tokens]
            keep = max(self.opts.max_length - len(a), 1)
            ids.append(p[-keep:] + a)
            n_answer.append(len(a))
        return ids, torch.tensor(n_answer)

    def _collate(self, split, idx):
        """The batch, with the scored window (`width`, a host int) and its targets built on the host: the loss
        reads no device value back."""
        b = self._host_batch(split, idx)
        b["n_answer"] = n_answer = b.pop("labels")
        ids, mask = b["input_ids"], b["attention_mask"]
        width = ids.shape[1] - 1 if self.opts.loss == "full" else int(n_answer.max())
        target = ids[:, -width:].clone()
        if self.opts.loss == "full":
            target[mask[:, -width:] == 0] = -100  # left padding is not scored
        else:
            for row, n in enumerate(n_answer.tolist()):
                target[row, : width - n] = -100  # prompt tokens inside the window are not scored
        return {**{k: v.to(self.device) for k, v in b.items()}, "target": target.to(self.device), "width": width}

    def _answer_loss(self, b, grad: bool):
        width = b["width"]
        with torch.set_grad_enabled(grad):
            out = self.model(input_ids=b["input_ids"], attention_mask=b["attention_mask"],
                             position_ids=b["position_ids"], logits_to_keep=width + 1)
            logits = out.logits[:, :-1].float()  # position t predicts token t+1: the last `width` tokens
            return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), b["target"].reshape(-1), ignore_index=-100)

    def device_loss(self, batch):
        return self._answer_loss(batch, grad=False)

    def loss(self, batch):
        return float(self.device_loss(batch))

    def grad_loss(self, batch):
        return self._answer_loss(batch, grad=True)

    def generation_kwargs(self) -> dict:
        """Decoding settings: greedy, or the authors' (prepare_settings.py: BASE_GENERATION_KWARGS + SQuAD's)."""
        kw = {"max_new_tokens": self.opts.max_new_tokens, "pad_token_id": self.tok.pad_token_id}
        if self.opts.decoding == "greedy":
            return {**kw, "do_sample": False}
        newline = self.tok("\n", add_special_tokens=False).input_ids[-1]
        return {**kw, "do_sample": True, "temperature": 1.0, "num_beams": 2, "top_k": None, "top_p": 0.3,
                "length_penalty": 2.0, "early_stopping": True, "eos_token_id": [newline, self.tok.eos_token_id]}

    @torch.no_grad()
    def evaluate(self, split: str = "test") -> dict[str, float]:
        rows = {"train": self.train, "dev": self.dev, "test": self.test}[split]
        ids, n_answer = self._enc[split]
        f1s, ems = [], []
        kwargs = self.generation_kwargs()
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):  # sampled decoding: seeded, and no effect on other draws
            torch.manual_seed(self.seed)
            order, size = length_order(ids), eval_batch_size(self.opts, self.device)
            for start in range(0, len(rows), size):
                idx = order[start:start + size]
                prompts = [ids[i][: len(ids[i]) - int(n_answer[i])] for i in idx]
                width = max(len(p) for p in prompts)
                pad = self.tok.pad_token_id
                input_ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])
                mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
                out = self.model.generate(input_ids=input_ids.to(self.device), attention_mask=mask.to(self.device),
                                          **kwargs)
                for i, seq in zip(idx, out[:, width:]):
                    text = self.tok.decode(seq, skip_special_tokens=True).split("\n")[0].strip()
                    golds = rows[i]["answers"]["text"]
                    f1s.append(max(token_f1(text, g) for g in golds))
                    ems.append(float(max(normalize_answer(text) == normalize_answer(g) for g in golds)))
        return {"f1": float(np.mean(f1s)), "exact_match": float(np.mean(ems))}
