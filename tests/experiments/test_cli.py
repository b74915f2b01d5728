"""Bad flags give exit code 2 and a message that names the flag."""

import json

import pytest
from cli_runs import compare_one_step

from normopt.cli import main

pytestmark = pytest.mark.integration  # `normopt compare` and `normopt sweep` end to end


@pytest.mark.parametrize(
    "argv, flag",
    [
        (["compare", "--steps", "x"], "--steps"),
        (["compare", "--stpes", "3"], "--stpes"),
        (["compare", "--lr", "adamw"], "--lr"),
        (["sweep", "--lr-factors", "1,two"], "--lr-factors"),
        (["compare", "--steps", "0"], "--steps"),
        (["compare", "--optimizers", "adamw,nope"], "--optimizers"),
        (["compare", "--task", "imagenet"], "--task"),
        (["sweep", "--basin", "lots"], "--basin"),
        (["sweep", "--lrs", "0.1,-1"], "--lrs"),
        (["compare", "--config", "/nonexistent/config.json"], "--config"),
        # an lr for an optimizer that is not run would be silently ignored
        (["compare", "--optimizers", "adamw,muon", "--lr", "lion=0.01"], "--lr"),
        (["compare", "--optimizers", "muon", "--lr", "adamw=0.01"], "--adamw-lr"),
        (["sweep", "--optimizers", "adamw", "--lr", "sgd=0.1"], "--lr"),
    ],
)
def test_bad_flag(argv, flag, capsys):
    try:
        code = main(argv)
    except SystemExit as e:  # argparse's own errors
        code = e.code
    assert code == 2
    assert flag in capsys.readouterr().err


def test_unknown_key_in_config_file(tmp_path, capsys):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"task": "synthetic", "bacth_size": 4}))
    assert main(["compare", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "bacth_size" in err and "batch_size" in err


def test_list(capsys):
    assert main(["compare", "--list"]) == 0
    out = capsys.readouterr().out
    assert "shakespeare-char" in out and "torch-muon" in out and "steps" in out


def test_missing_fashion_mnist_is_a_clear_message(monkeypatch, tmp_path, capsys):
    from normopt.experiments import data as D

    monkeypatch.setattr(D, "FASHION_MNIST_DIRS", (str(tmp_path / "nowhere"),))
    monkeypatch.delenv("NORMOPT_FASHION_MNIST", raising=False)
    code = compare_one_step("fashion-mnist", D.load_fashion_mnist, tmp_path / "r")
    assert code == 1
    assert "apt-get install dataset-fashion-mnist" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()
