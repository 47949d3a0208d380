"""Prompt templates and verbalisers, one set per source, chosen with `task.template`.

- ``authors``: the HiSo / DeComFL authors' code, ZidongLiu/DeComFL ``cezo_fl/util/language_utils.py`` at commit
  be74289332c1a531e13e029b733bb21776b2da1f (classes SST2Template ... SQuADTemplate).  One knowing deviation:
  their QQPTemplate reads ``question1`` into both slots; here the second slot holds ``question2``.
- ``mezo``: princeton-nlp/MeZO ``large_models/templates.py`` at commit 6acfd0ba922bf2940ff5fddf1cdd704e1b6de8f7
  (the PromptSource prompts for RTE, CB, WiC, WSC, MultiRC; its own SST-2, BoolQ and SQuAD prompts).  MeZO has
  no QQP template.
- ``suite``: this suite's own prompts, the default of the CPU tiers (the only set for the packaged data).

A template is the prompt (what the model reads) and one verbaliser word per label; the loss is the
cross-entropy over the verbaliser words' logits at the prompt's last position.  For SQuAD the "verbaliser"
is the text put between the prompt and the gold answer (``answer_prefix``).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Template:
    prompt: Callable[[dict], str]
    verbalizer: tuple[str, ...] = ()  # one word per label, each a single token
    answer_prefix: str = " "  # generation tasks: between the prompt and the answer


YES_NO = ("No", "Yes")


def _boolq_mezo(e: dict) -> str:
    q = e["question"] if e["question"].endswith("?") else e["question"] + "?"
    return f"{e['passage']} {q[0].upper() + q[1:]}"


_RTE = Template(lambda e: f"{e['premise']}\nDoes this mean that \"{e['hypothesis']}\" is true? Yes or No?\n",
                ("Yes", "No"))  # 0 = entailment
_CB = Template(lambda e: f"Suppose {e['premise']} Can we infer that \"{e['hypothesis']}\"? Yes, No, or Maybe?\n",
               ("Yes", "No", "Maybe"))  # entailment, contradiction, neutral
_WIC = Template(lambda e: f"Does the word \"{e['word']}\" have the same meaning in these two sentences? Yes, No?\n"
                          f"{e['sentence1']}\n{e['sentence2']}\n", YES_NO)
_WSC = Template(lambda e: f"{e['text']}\nIn the previous sentence, does the pronoun \"{e['span2_text'].lower()}\" "
                          f"refer to {e['span1_text']}? Yes or No?\n", YES_NO)
_MULTIRC = Template(lambda e: f"{e['paragraph']}\nQuestion: {e['question']}\nI found this answer \"{e['answer']}\". "
                              "Is that correct? Yes or No?\n", YES_NO)

TEMPLATES: dict[str, dict[str, Template]] = {
    "rotten_tomatoes": {"suite": Template(lambda e: f"{e['text']}\nIt was", (" terrible", " great"))},
    "tweets": {"suite": Template(lambda e: f"{e['text']}\nThe sentiment is", (" negative", " neutral", " positive"))},
    "sst2": {
        "suite": Template(lambda e: f"{e['sentence']} It was", (" bad", " good")),
        "authors": Template(lambda e: f"{e['sentence'].strip()} It was", (" bad", " good")),
        "mezo": Template(lambda e: f"{e['sentence'].strip()} It was", (" terrible", " great")),
    },
    "qqp": {
        "suite": Template(lambda e: f"Question 1: {e['question1']}\nQuestion 2: {e['question2']}\n"
                                    "Do these two questions ask the same thing? Yes or No?\n", YES_NO),
        # the authors' wording and label words; question2 in the second slot (their code repeats question1)
        "authors": Template(lambda e: f"Question 1: {e['question1'].strip()}\n Question 2: {e['question2'].strip()}\n"
                                      " Are they semantically equivalent? Yes or No?\n", (" No", " Yes")),
    },
    "rte": {"suite": _RTE, "authors": _RTE, "mezo": _RTE},
    "cb": {"suite": Template(_RTE.prompt, ("Yes", "No", "Maybe")), "authors": _CB, "mezo": _CB},
    "boolq": {
        "suite": Template(lambda e: f"{e['passage']} {e['question']}?", (" No", " Yes")),
        "authors": Template(lambda e: f"{e['passage']}\nQuestion: {e['question']}\nIs that correct? Yes or No?\n",
                            YES_NO),
        "mezo": Template(_boolq_mezo, (" No", " Yes")),
    },
    "wic": {"suite": _WIC, "authors": _WIC, "mezo": _WIC},
    "wsc": {"suite": _WSC, "authors": _WSC, "mezo": _WSC},
    "multirc": {"suite": _MULTIRC, "authors": _MULTIRC, "mezo": _MULTIRC},
    "squad": {
        "suite": Template(lambda e: f"Title: {e['title']}\nContext: {e['context']}\nQuestion: {e['question']}\nAnswer:"),
        "authors": Template(lambda e: f"Title: {e['title']}\nContext: {e['context']}\nQuestion: "
                                      f"{e['question'].strip()}\nAnswer concisely in a few words:", answer_prefix=""),
        "mezo": Template(lambda e: f"Title: {e['title']}\nContext: {e['context']}\nQuestion: "
                                   f"{e['question'].strip()}\nAnswer:"),
    },
}


def template(task: str, name: str) -> Template:
    """The named template of a task; ValueError listing the available ones when it has none."""
    options = TEMPLATES[task]
    if name not in options:
        raise ValueError(f"task.template: {name!r} is not defined for task {task} (available: {', '.join(options)})")
    return options[name]
