"""The harness entries of the newer Muon family train a tiny char-LM for a few steps."""

import math

import pytest
import torch

from normopt.experiments import config as C
from normopt.experiments.data import CharCorpus
from normopt.experiments.optimizers import OPTIMIZERS, build_optimizers
from normopt.experiments.tasks import CharLMProblem
from normopt.experiments.train import train

pytestmark = pytest.mark.integration  # harness entries training a char-LM

CPU = torch.device("cpu")


def _problem():
    ids = torch.arange(200, dtype=torch.uint8) % 50
    corpus = CharCorpus(ids[:150], ids[150:], "".join(chr(65 + i) for i in range(50)), ("x",))
    return CharLMProblem(corpus, CPU, block_size=8, n_layer=1, d=16, n_head=2, val_windows=5)


@pytest.mark.parametrize("name", ["normuon", "adamuon", "muon-heads"])
def test_family_entries_train(name):
    assert name in OPTIMIZERS
    problem = _problem()
    cfg = C.resolve(C.CompareConfig(task="shakespeare-char", optimizers=(name,), steps=3))
    run = train(problem, name, OPTIMIZERS[name].lr, 0, cfg, CPU, problem.val_batches(2))
    assert len(run.train_loss) == 3 and all(math.isfinite(v) for v in run.val_loss)


def test_muon_heads_orthogonalizes_each_head_of_the_fused_qkv():
    problem = _problem()
    cfg = C.resolve(C.CompareConfig(task="shakespeare-char", optimizers=("muon-heads",), steps=1))
    model = problem.model()
    (opt,) = build_optimizers("muon-heads", model, 0.02, cfg)
    qkv = [g for g in opt.param_groups if g.get("role") == "qkv"]
    assert qkv and all(g["num_heads"] == 2 and g["split"] == 3 for g in qkv)
