"""Language-model tasks on tiny random models: real prompts, real tokenizer, real datasets code path
(hub data replaced by fixtures in the real schema)."""
import numpy as np
import pytest
import torch

from hiso.config import ConfigError, load_config
from hiso.models import ModelUnavailable, load_model
from hiso.run import build_federation, run
from hiso.tasks import squad, text
from hiso.tasks.prompts import TEMPLATES

FIXTURES = {
    "sst2": lambda i, y: {"sentence": f"a {'wonderful' if y else 'dreadful'} film number {i}", "label": y, "idx": i},
    "qqp": lambda i, y: {"question1": f"how do I cook rice {i}?", "question2": f"what is the way to cook rice {i}?",
                         "label": y, "idx": i},
    "rte": lambda i, y: {"premise": f"The cat {i} sat on the mat.", "hypothesis": "A cat sat.", "label": y, "idx": i},
    "cb": lambda i, y: {"premise": f"It rained on day {i}.", "hypothesis": "The ground is wet.", "label": y % 3,
                        "idx": i},
    "boolq": lambda i, y: {"question": f"is {i} even", "passage": f"{i} is a number.", "label": y, "idx": i},
    "wic": lambda i, y: {"word": "bank", "sentence1": f"I sat by the bank {i}.", "sentence2": "The bank lends money.",
                         "start1": 9, "start2": 4, "end1": 13, "end2": 8, "label": y, "idx": i},
    "wsc": lambda i, y: {"text": f"Mark told Pete {i} lies because he was jealous.", "span1_index": 0,
                         "span2_index": 6, "span1_text": "Mark", "span2_text": "He", "label": y, "idx": i},
    "multirc": lambda i, y: {"paragraph": f"Paris {i} is the capital of France.", "question": "What is Paris?",
                             "answer": "the capital", "label": y,
                             "idx": {"paragraph": i, "question": 0, "answer": 0}},
}
PROMPT_FIELDS = {"qqp": ["question1", "question2"], "rte": ["premise", "hypothesis"], "wic": ["sentence1", "sentence2"],
                 "multirc": ["paragraph", "question", "answer"], "boolq": ["passage", "question"], "sst2": ["sentence"]}


@pytest.fixture
def hub_fixtures(monkeypatch):
    calls = []

    def fake(path, name, split):
        calls.append((path, name, split))
        task = {"sst2": "sst2", "qqp": "qqp"}.get(name, name.split(".")[0])
        n = 60 if split == "train" else 30
        return [FIXTURES[task](i, i % (3 if task == "cb" else 2)) for i in range(n)]
    monkeypatch.setattr(text, "load_hub", fake)
    return calls


def small(name, **kw):
    return load_config(data={"task": {"name": name, "model": "tiny-llama", "train_size": 40, "dev_size": 10,
                                      "test_size": 20, "max_length": 48, **kw},
                             "federation": {"rounds": 3, "batch_size": 8, "lr": 1e-3, "perturbations": 2},
                             "run": {"progress": False, "eval_every": 3}})


@pytest.mark.parametrize("name,source", [(n, s) for n in sorted(FIXTURES) for s in TEMPLATES[n]])
def test_hub_task_fixture_runs_the_real_path(hub_fixtures, name, source):
    fed, task = build_federation(small(name, template=source))
    assert {split for _, _, split in hub_fixtures} == {"train", "validation"}
    t = TEMPLATES[name][source]
    assert len(task.label_ids) == len(t.verbalizer) and len(set(task.label_ids.tolist())) == len(task.label_ids)
    example = task.test[0]
    prompt = t.prompt(example)
    for field in PROMPT_FIELDS.get(name, []):
        assert str(example[field]).lower() in prompt.lower()
    b = task.batch(0, np.random.default_rng(0), 8)
    assert b["input_ids"].shape[0] == 8 and np.isfinite(task.loss(b))
    row = fed.run_round()
    assert np.isfinite(row["train_loss"])
    ev = task.evaluate()
    assert 0.0 <= ev["accuracy"] <= 1.0 and np.isfinite(ev["test_loss"])


@pytest.mark.parametrize("source", sorted(TEMPLATES["qqp"]))
def test_qqp_prompt_has_both_questions(source):
    p = TEMPLATES["qqp"][source].prompt({"question1": "alpha?", "question2": "beta?"})
    assert "alpha?" in p and "beta?" in p


@pytest.mark.parametrize("model", ["tiny-llama", "tiny-opt"])
def test_left_padding_does_not_change_the_label_logits(model):
    """The verbalizer is read at the last position: a padded row must score as it does alone."""
    cfg = small("rotten_tomatoes", model=model)
    _, task = build_federation(cfg)
    lengths = [len(x) for x in task._enc["test"][0]]
    short, long = int(np.argmin(lengths)), int(np.argmax(lengths))
    assert lengths[short] < lengths[long]
    together = task.label_logits(task._collate("test", [short, long]))
    alone = task.label_logits(task._collate("test", [short]))
    torch.testing.assert_close(together[0], alone[0], rtol=1e-4, atol=1e-5)


def test_offline_tasks_load_real_text():
    for name, k in (("rotten_tomatoes", 2), ("tweets", 3)):
        train, test = text.TASKS[name].load(0)
        assert len(train) > 5000 and len(test) > 1000
        assert set(r["label"] for r in train) == set(range(k))


def test_lora_trains_only_adapters_and_replays_exactly():
    cfg = load_config(data={"task": {"name": "rotten_tomatoes", "model": "tiny-llama", "trainable": "lora",
                                     "lora_rank": 2, "train_size": 40, "dev_size": 10, "test_size": 20},
                            "federation": {"rounds": 5, "batch_size": 8, "lr": 1e-2, "perturbations": 2,
                                           "local_steps": 2, "verify_replay": True},
                            "run": {"progress": False}})
    fed, task = build_federation(cfg)
    n_lora = sum(p.numel() for p in task.params())
    n_all = sum(p.numel() for p in task.model.parameters())
    assert 0 < n_lora < n_all / 50
    base = [p.clone() for n, p in task.model.named_parameters() if "lora" not in n]
    for _ in range(5):
        assert fed.run_round()["replay_max_abs_diff"] <= 1e-6
    fed.load_server_model()
    assert all(torch.equal(a, p) for a, (n, p) in zip(base, [(n, p) for n, p in task.model.named_parameters()
                                                             if "lora" not in n]))


@pytest.mark.parametrize("model", ["tiny-llama", "tiny-opt"])
def test_end_to_end_federated_run_on_tiny_lm(model):
    res = run(small("rotten_tomatoes", model=model))
    assert res.status == "complete" and len(res.metrics) == 3
    assert res.metrics["accuracy"].notna().sum() == 1


def test_missing_model_says_how_to_get_it(monkeypatch):
    with pytest.raises(ModelUnavailable, match="unknown model"):
        load_model("gpt-5")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelUnavailable, match="needs the Hugging Face hub once"):
        load_model("opt-125m")


def test_missing_hub_data_says_how_to_get_it(monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(text.DataUnavailable, match="offline, use the tasks rotten_tomatoes or tweets"):
        text.load_hub("nyu-mll/glue", "sst2", "train")


def squad_rows(n):
    return [{"id": str(i), "title": "Paris", "context": f"Paris is the capital of France. Item {i} is red.",
             "question": f"What colour is item {i}?", "answers": {"text": ["red", "Red"], "answer_start": [40, 40]}}
            for i in range(n)]


def test_squad_generation_path_on_a_fixture(monkeypatch):
    monkeypatch.setattr(text, "load_hub", lambda path, name, split: squad_rows(40 if split == "train" else 12))
    cfg = load_config(data={"task": {"name": "squad", "model": "tiny-llama", "train_size": 30, "dev_size": 5,
                                     "test_size": 12, "max_length": 96, "eval_batch_size": 6},
                            "federation": {"rounds": 2, "batch_size": 4, "lr": 1e-3, "perturbations": 2},
                            "run": {"progress": False, "eval_every": 2}})
    res = run(cfg)
    assert res.status == "complete" and np.isfinite(res.metrics["train_loss"]).all()
    last = res.metrics.iloc[-1]
    assert 0.0 <= last["f1"] <= 1.0 and 0.0 <= last["exact_match"] <= last["f1"] + 1e-9


def squad_task(monkeypatch):
    """A small SQuAD task on fixture rows in the hub's schema."""
    monkeypatch.setattr(text, "load_hub", lambda path, name, split: squad_rows(40))
    cfg = load_config(data={"task": {"name": "squad", "model": "tiny-llama", "train_size": 20, "dev_size": 2,
                                     "test_size": 4, "max_length": 96}, "run": {"progress": False}})
    return build_federation(cfg)[1]


def test_squad_loss_scores_only_the_answer_tokens(monkeypatch):
    task = squad_task(monkeypatch)
    b = task._collate("train", [0, 1])
    n = int(b["n_answer"][0])
    assert task.tok.decode(b["input_ids"][0, -n:]).strip() == "red"
    # the same loss recomputed from full logits, scoring only each row's answer tokens
    manual = []
    with torch.no_grad():
        out = task.model(input_ids=b["input_ids"], attention_mask=b["attention_mask"], position_ids=b["position_ids"])
        for row in range(2):
            k = int(b["n_answer"][row])
            logits = out.logits[row, -k - 1:-1]
            manual.append(torch.nn.functional.cross_entropy(logits, b["input_ids"][row, -k:], reduction="sum"))
    total = sum(int(x) for x in b["n_answer"])
    assert task.loss(b) == pytest.approx(float(sum(manual)) / total, rel=1e-4)


def test_squad_authors_protocol_full_loss_head_rows_and_seeded_beam_sampling(monkeypatch):
    """task.loss: full scores every non-pad token; sampling: head takes the first rows; decoding: authors
    (2 beams, sampled, 5 tokens) is seeded, so an evaluation repeats exactly."""
    monkeypatch.setattr(text, "load_hub", lambda path, name, split: squad_rows(40 if split == "train" else 20))
    cfg = load_config(data={"task": {"name": "squad", "model": "tiny-llama", "train_size": 14, "dev_size": 2,
                                     "test_size": 5, "max_length": 96, "template": "authors", "loss": "full",
                                     "decoding": "authors", "max_new_tokens": 5, "sampling": "head"},
                            "run": {"progress": False}})
    _, task = build_federation(cfg)
    assert sorted(int(r["id"]) for r in task.test) == [0, 1, 2, 3, 4]  # the first 5 validation rows
    assert sorted(int(r["id"]) for r in task.train + task.dev) == list(range(16))
    b = task._collate("train", [0, 1])
    with torch.no_grad():
        out = task.model(input_ids=b["input_ids"], attention_mask=b["attention_mask"], position_ids=b["position_ids"])
    target = b["input_ids"][:, 1:].clone()
    target[b["attention_mask"][:, 1:] == 0] = -100
    manual = torch.nn.functional.cross_entropy(out.logits[:, :-1].reshape(-1, out.logits.shape[-1]),
                                               target.reshape(-1), ignore_index=-100)
    assert task.loss(b) == pytest.approx(float(manual), rel=1e-4)
    assert task.tok.decode(b["input_ids"][0]).endswith("few words:red")
    kw = task.generation_kwargs()
    assert (kw["num_beams"], kw["do_sample"], kw["max_new_tokens"], kw["top_p"]) == (2, True, 5, 0.3)
    assert task.evaluate() == task.evaluate()


@pytest.mark.parametrize("pred,gold,f1", [("the cat sat", "Cat sat.", 1.0), ("cat", "dog", 0.0),
                                          ("x b c", "b c d", 2 / 3), ("a b c", "b c d", 0.8), ("", "", 1.0)])
def test_squad_token_f1(pred, gold, f1):
    assert squad.token_f1(pred, gold) == pytest.approx(f1)


def test_cli_says_how_to_get_missing_data(tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path
    root = Path(__file__).resolve().parents[1]
    conf = tmp_path / "c.yaml"
    conf.write_text("task: {name: sst2, model: tiny-llama}\n")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PYTHONPATH": str(root)}
    p = subprocess.run([sys.executable, "-m", "hiso", "run", "--config", str(conf), "--out", str(tmp_path / "o")],
                       cwd=root, env=env, capture_output=True, text=True)
    assert p.returncode == 4 and "offline, use the tasks rotten_tomatoes or tweets" in p.stderr


def test_lora_with_bf16_frozen_base_keeps_fp32_adapters():
    cfg = load_config(data={"task": {"name": "rotten_tomatoes", "model": "tiny-llama", "trainable": "lora",
                                     "frozen_dtype": "bfloat16", "train_size": 40, "dev_size": 10, "test_size": 20},
                            "federation": {"rounds": 2, "batch_size": 8, "lr": 1e-2, "perturbations": 2},
                            "run": {"progress": False, "eval_every": 2}})
    res = run(cfg)
    fed = res.federation
    assert all(p.dtype == torch.float32 for p in fed.global_params())
    frozen = [p for n, p in fed.task.model.named_parameters() if "lora" not in n]
    assert all(p.dtype == torch.bfloat16 for p in frozen)
    assert np.isfinite(res.metrics["train_loss"]).all() and 0 <= res.metrics["accuracy"].iloc[-1] <= 1
    with pytest.raises(ConfigError, match="task.frozen_dtype must be float32 with trainable: full"):
        load_config(data={"task": {"name": "rotten_tomatoes", "model": "tiny-llama", "frozen_dtype": "bfloat16"}})


def test_device_option_cpu_runs_and_cuda_without_a_gpu_says_so(monkeypatch):
    from hiso.tasks.text import resolve_device
    assert resolve_device("cpu") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(RuntimeError, match="no CUDA device"):
        resolve_device("cuda")
    res = run(small("rotten_tomatoes", model="tiny-opt", device="auto"))
    assert res.status == "complete"


@pytest.mark.parametrize("model", ["tiny-llama", "tiny-opt"])
def test_hutchinson_diagonal_on_a_tiny_lm_matches_the_exact_hessian(model):
    """Hessian-vector products through a transformer (double backward: needs the math attention kernel).
    Entry k of Hutchinson's estimate is mean_s v_sk (H_k. . v_s): with the exact Hessian rows (one
    double-backward per coordinate) and the same Rademacher probes it is reproduced to rounding."""
    from hiso.diagnostics import true_diagonal
    cfg = load_config(data={"task": {"name": "rotten_tomatoes", "model": model, "trainable": "lora",
                                     "lora_rank": 1, "lora_targets": "q_proj,v_proj", "train_size": 40,
                                     "dev_size": 10, "test_size": 10}, "run": {"progress": False}})
    _, task = build_federation(cfg)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():  # off LoRA's B = 0 start, where the diagonal over A vanishes
        for p in task.params():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    batch = task.batch(0, np.random.default_rng(0), 8)
    samples, k = 40, 24
    est = true_diagonal(task, samples=samples, batch=batch, seed=3)
    params = task.params()
    probes = torch.Generator().manual_seed(3)  # the probes true_diagonal draws, in its order
    v = torch.stack([torch.cat([torch.randint(0, 2, p.shape, generator=probes).reshape(-1) for p in params])
                     for _ in range(samples)]).double() * 2 - 1
    for p in params:
        p.requires_grad_(True)
    with torch.enable_grad(), torch.nn.attention.sdpa_kernel(torch.nn.attention.SDPBackend.MATH):
        g0 = torch.autograd.grad(task.grad_loss(batch), params, create_graph=True)[0].reshape(-1)
        rows = torch.stack([torch.cat([r.reshape(-1) for r in torch.autograd.grad(g0[i], params, retain_graph=True)])
                            for i in range(k)]).double()
    expected = (v[:, :k] * (v @ rows.T)).mean(0)
    assert rows.diagonal().abs().max() > 1e-3  # a non-trivial Hessian
    torch.testing.assert_close(est[:k], expected, rtol=1e-3, atol=1e-5)


def test_lora_adapters_of_a_pretrained_model_do_not_depend_on_the_process_rng():
    """peft initialises the adapters from torch's global generator; a pretrained model seeds nothing before it,
    so the run seed must (a resumed run and a deployed client rebuild the task in a fresh process)."""
    from hiso.run import build_federation
    cfg = load_config(data={"task": {"name": "rotten_tomatoes", "model": "smollm2-135m-instruct", "trainable": "lora",
                                     "lora_rank": 2, "train_size": 20, "dev_size": 5, "test_size": 5},
                            "run": {"progress": False}})
    built = []
    for state in (1, 2):
        torch.manual_seed(state)  # whatever the process drew before
        fed, _ = build_federation(cfg)
        built.append([p.clone() for p in fed.global_params()])
    assert all(torch.equal(a, b) for a, b in zip(*built, strict=True))
    assert any(a.abs().sum() > 0 for a in built[0])  # lora_A is random, not zero


def test_a_fixed_test_seed_scores_every_run_seed_on_the_same_test_examples():
    """task.test_seed: the held-out rows and the test sample come from it (every seed and method is scored on the
    same examples), while the training sample still follows the run seed; without it each seed draws its own."""
    from hiso.tasks import TASKS
    cls = TASKS["rotten_tomatoes"]
    opts = dict(model="tiny-llama", train_size=40, dev_size=10, test_size=30)
    fixed = [cls(cls.Options(**opts, test_seed=7), num_clients=2, seed=s) for s in (0, 1)]
    own = [cls(cls.Options(**opts), num_clients=2, seed=s) for s in (0, 1)]
    assert fixed[0].test == fixed[1].test and len(fixed[0].test) == 30
    assert fixed[0].train != fixed[1].train
    assert own[0].test != own[1].test
    assert not {r["text"] for r in fixed[1].test} & {r["text"] for r in fixed[1].train}  # held out of training
    longer = cls(cls.Options(**{**opts, "test_size": 60}, test_seed=7), num_clients=2, seed=3)
    assert longer.test[:30] == fixed[0].test  # a smaller fixed sample is the start of a larger one
