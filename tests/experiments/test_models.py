"""The task models and the parameter routing of Muon-style hybrids."""

import torch
from torch import nn

from normopt.experiments.models import CNN, GPT, MLP
from normopt.experiments.optimizers import split_params


def _names(model, params):
    ids = {id(p) for p in params}
    return sorted(n for n, p in model.named_parameters() if id(p) in ids)


def test_gpt_shapes_tied_head_and_causality():
    model = GPT(vocab=11, block_size=8, n_layer=2, d=16, n_head=4)
    assert model.head.weight is model.tok.weight
    assert any(isinstance(m, nn.LayerNorm) for m in model.modules())
    x = torch.randint(11, (3, 8))
    logits = model(x)
    assert logits.shape == (3, 8, 11)
    y = x.clone()
    y[:, 5:] = (y[:, 5:] + 1) % 11  # change the future only
    assert torch.allclose(model(y)[:, :5], logits[:, :5], atol=1e-6)


def test_routing_keeps_tied_embedding_head_and_gains_off_muon():
    model = GPT(vocab=11, block_size=8, n_layer=2, d=16, n_head=4)
    hidden, other = split_params(model)
    assert _names(model, hidden) == sorted(
        f"blocks.{i}.{n}.weight" for i in range(2) for n in ("attn.qkv", "attn.proj", "fc", "proj")
    )
    assert "tok.weight" in _names(model, other) and "pos.weight" in _names(model, other)
    assert len(hidden) + len(other) == len(list(model.parameters()))  # the tied tensor once
    assert all(p.ndim == 2 for p in hidden)


def test_routing_of_mlp_and_cnn():
    mlp = MLP(64, (32, 32), 10)
    hidden, _ = split_params(mlp)
    assert _names(mlp, hidden) == ["layers.0.weight", "layers.1.weight"]
    cnn = CNN(10)
    assert _names(cnn, split_params(cnn)[0]) == ["conv1.weight", "conv2.weight", "fc.weight"]
    assert _names(cnn, split_params(cnn, max_ndim=2)[0]) == ["fc.weight"]  # torch Muon: 2-D only
    assert cnn(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
