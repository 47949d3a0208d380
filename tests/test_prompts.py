"""The paper tier's prompts are the authors': for one example in each data set's real schema, the exact
string and verbaliser of ZidongLiu/DeComFL cezo_fl/util/language_utils.py @ be74289 (MeZO's where named)."""
import pytest

from hiso.config import ConfigError, load_config
from hiso.tasks.prompts import TEMPLATES

EXAMPLES = {
    "sst2": {"sentence": "it 's a charming and often affecting journey . ", "label": 1, "idx": 0},
    "qqp": {"question1": "How do I cook rice? ", "question2": "What is the way to cook rice?", "label": 1, "idx": 3},
    "rte": {"premise": "Dana Reeve died.", "hypothesis": "Christopher Reeve had an accident.", "label": 1, "idx": 0},
    "cb": {"premise": "It rained.", "hypothesis": "The ground is wet", "label": 0, "idx": 0},
    "boolq": {"question": "is france the same timezone as the uk", "passage": "At the Liberation of France...",
              "label": 0, "idx": 0},
    "wic": {"word": "place", "sentence1": "Do you want to come over to my place later?",
            "sentence2": "A political system with no place for the less prominent groups.", "start1": 31,
            "start2": 27, "end1": 36, "end2": 32, "label": 0, "idx": 0},
    "wsc": {"text": "Mark told Pete many lies about himself.", "span1_index": 0, "span2_index": 5,
            "span1_text": "Mark", "span2_text": "Himself", "label": 1, "idx": 0},
    "multirc": {"paragraph": "Paris is the capital.", "question": "What is Paris?", "answer": "the capital",
                "label": 1, "idx": {"paragraph": 0, "question": 0, "answer": 0}},
    "squad": {"id": "5733be284776f41900661182", "title": "University_of_Notre_Dame",
              "context": "Architecturally, the school has a Catholic character.",
              "question": "To whom did the Virgin Mary allegedly appear? ",
              "answers": {"text": ["Saint Bernadette Soubirous"], "answer_start": [515]}},
}

AUTHORS = {
    "sst2": ("it 's a charming and often affecting journey . It was", (" bad", " good")),
    # the suite's choice: question2 in the second slot (the authors' code repeats question1 there)
    "qqp": ("Question 1: How do I cook rice?\n Question 2: What is the way to cook rice?\n Are they semantically "
            "equivalent? Yes or No?\n", (" No", " Yes")),
    "rte": ('Dana Reeve died.\nDoes this mean that "Christopher Reeve had an accident." is true? Yes or No?\n',
            ("Yes", "No")),
    "cb": ('Suppose It rained. Can we infer that "The ground is wet"? Yes, No, or Maybe?\n', ("Yes", "No", "Maybe")),
    "boolq": ("At the Liberation of France...\nQuestion: is france the same timezone as the uk\nIs that correct? "
              "Yes or No?\n", ("No", "Yes")),
    "wic": ('Does the word "place" have the same meaning in these two sentences? Yes, No?\nDo you want to come over '
            "to my place later?\nA political system with no place for the less prominent groups.\n", ("No", "Yes")),
    "wsc": ('Mark told Pete many lies about himself.\nIn the previous sentence, does the pronoun "himself" refer to '
            "Mark? Yes or No?\n", ("No", "Yes")),
    "multirc": ('Paris is the capital.\nQuestion: What is Paris?\nI found this answer "the capital". Is that correct? '
                "Yes or No?\n", ("No", "Yes")),
    "squad": ("Title: University_of_Notre_Dame\nContext: Architecturally, the school has a Catholic character.\n"
              "Question: To whom did the Virgin Mary allegedly appear?\nAnswer concisely in a few words:", ()),
}
MEZO = {
    "sst2": ("it 's a charming and often affecting journey . It was", (" terrible", " great")),
    "boolq": ("At the Liberation of France... Is france the same timezone as the uk?", (" No", " Yes")),
    "cb": AUTHORS["cb"], "rte": AUTHORS["rte"], "wic": AUTHORS["wic"], "wsc": AUTHORS["wsc"],
    "multirc": AUTHORS["multirc"],
}


@pytest.mark.parametrize("task", sorted(AUTHORS))
def test_authors_template_is_the_authors_string(task):
    t = TEMPLATES[task]["authors"]
    assert (t.prompt(EXAMPLES[task]), t.verbalizer) == AUTHORS[task]


@pytest.mark.parametrize("task", sorted(MEZO))
def test_mezo_template_is_mezos_string(task):
    t = TEMPLATES[task]["mezo"]
    assert (t.prompt(EXAMPLES[task]), t.verbalizer) == MEZO[task]


def test_squad_answer_follows_the_authors_prompt_directly():
    # the authors' verbalize(): f"...Answer concisely in a few words:{answer}" (no space)
    assert TEMPLATES["squad"]["authors"].answer_prefix == "" and TEMPLATES["squad"]["suite"].answer_prefix == " "


def test_a_template_a_task_lacks_and_generation_keys_on_classification_are_refused():
    with pytest.raises(ConfigError, match="task.template: 'mezo' is not defined for task qqp"):
        load_config(data={"task": {"name": "qqp", "template": "mezo"}})
    with pytest.raises(ConfigError, match="task.loss"):
        load_config(data={"task": {"name": "sst2", "loss": "full"}})
    with pytest.raises(ConfigError, match="task.template"):
        load_config(data={"task": {"name": "rotten_tomatoes", "template": "authors"}})
