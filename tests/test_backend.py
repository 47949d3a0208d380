"""What a text run sets in the process and records: matmul precision, CUDA determinism, and an evaluation that
reads its results back once.  The CUDA branches run here on CPU through the same functions, given a CUDA
torch.device (nothing is allocated on it)."""
import json

import numpy as np
import pytest
import torch

from bench.perf_dispatch import Counter
from hiso.run import backend_state, build_federation, run
from hiso.tasks import text
from tests.test_text import small, squad_task


@pytest.fixture
def restore_backend():
    yield
    torch.set_float32_matmul_precision("highest")
    torch.backends.cudnn.allow_tf32 = True
    torch.use_deterministic_algorithms(False)


def test_a_cuda_run_asks_for_deterministic_algorithms_and_says_it_is_not_bit_reproducible(monkeypatch,
                                                                                          restore_backend):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    opts = text.TextOptions()
    text.configure_backend(torch.device("cuda"), opts)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)  # what a CUDA run's process answers
    det = backend_state()["determinism"]
    assert det == {"deterministic_algorithms": "warn-only", "cublas_workspace_config": ":4096:8",
                   "bit_reproducible": False}
    text.configure_backend(torch.device("cuda"), text.TextOptions(deterministic=False))
    assert backend_state()["determinism"]["deterministic_algorithms"] is False
    monkeypatch.undo()
    text.configure_backend(torch.device("cpu"), opts)  # the next run in the process starts from the defaults
    assert backend_state()["determinism"]["deterministic_algorithms"] is False
    assert backend_state()["determinism"]["bit_reproducible"] is True


def test_matmul_precision_is_a_key_written_to_run_json_and_never_leaks_into_the_next_run(tmp_path, restore_backend):
    tf32 = small("rotten_tomatoes", matmul_precision="high")
    tf32.federation.rounds = 1
    run(tf32, tmp_path / "tf32")
    info = json.loads((tmp_path / "tf32" / "run.json").read_text())
    assert info["precision"] == {"float32_matmul": "high", "cuda_matmul_allow_tf32": True, "cudnn_allow_tf32": True}
    plain = small("rotten_tomatoes")
    plain.federation.rounds = 1
    run(plain, tmp_path / "plain")
    info = json.loads((tmp_path / "plain" / "run.json").read_text())
    assert info["precision"] == {"float32_matmul": "highest", "cuda_matmul_allow_tf32": False,
                                 "cudnn_allow_tf32": False}
    # at their defaults the new keys are not part of a run's identity (results written before them still resume)
    explicit = small("rotten_tomatoes", matmul_precision="highest", deterministic=True, eval_batch_size_cuda=256)
    assert explicit.hash() == small("rotten_tomatoes").hash() != small("rotten_tomatoes", deterministic=False).hash()


def _syncs(fn) -> int:
    c = Counter(set(), 1, fake_reads=False)
    with c:
        fn()
    return c.syncs


def test_evaluation_sorts_by_length_uses_the_cuda_batch_size_and_reads_back_once(monkeypatch):
    _, task = build_federation(small("rotten_tomatoes", test_size=20, eval_batch_size=6, eval_batch_size_cuda=8))
    ids = task._enc["test"][0]
    batches = []
    real = task._collate
    monkeypatch.setattr(task, "_collate", lambda split, idx: (batches.append(list(idx)), real(split, idx))[1])
    ev = task.evaluate()
    assert [len(b) for b in batches] == [6, 6, 6, 2]
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(20)) and [len(ids[i]) for i in flat] == sorted(len(x) for x in ids)
    # the same numbers as one example at a time
    one = [task.label_logits(real("test", [i])) for i in range(20)]
    labels = task._enc["test"][1]
    acc = np.mean([int(lg.argmax(1)) == int(y) for lg, y in zip(one, labels)])
    loss = np.mean([float(torch.nn.functional.cross_entropy(lg, y[None])) for lg, y in zip(one, labels)])
    assert ev["accuracy"] == acc and ev["test_loss"] == pytest.approx(loss, rel=1e-5)
    # no value is read back per batch: the evaluation's syncs are the model's own forwards' (transformers' mask
    # checks); the sums come back together at the end
    forwards = [real("test", idx) for idx in batches]
    model_only = sum(_syncs(lambda b=b: task.label_logits(b)) for b in forwards)
    batches.clear()
    assert _syncs(task.evaluate) == model_only
    batches.clear()
    task.device = torch.device("cuda")  # the batch size a CUDA device gets (no tensor is made there)
    assert text.eval_batch_size(task.opts, task.device) == 8


def test_the_squad_loss_reads_nothing_back_from_the_device(monkeypatch):
    task = squad_task(monkeypatch)
    b = task._collate("train", [0, 1])
    model_only = _syncs(lambda: task.model(input_ids=b["input_ids"], attention_mask=b["attention_mask"],
                                           position_ids=b["position_ids"], logits_to_keep=b["width"] + 1))
    assert _syncs(lambda: task.device_loss(b)) == model_only
