"""examples/lightning_module.py: normopt.Muon in configure_optimizers, resumed by ckpt_path."""

import importlib

import pytest
import torch

pytest.importorskip("lightning")

# 2 steps per epoch: 64 windows of 32 characters in batches of 32
SMALL = dict(data="generated", train_windows=64, val_windows=32, warmup=1)


def test_resume_with_ckpt_path_is_exact(tmp_path):
    pl = importlib.import_module("lightning_module")
    whole = pl.train(tmp_path / "a", epochs=2, **SMALL)
    resumed = pl.train(tmp_path / "b", epochs=2, resume=tmp_path / "a" / "epoch=0.ckpt", **SMALL)
    a = dict(whole["module"].named_parameters())
    b = dict(resumed["module"].named_parameters())
    for name in a:
        assert torch.equal(a[name], b[name]), name
    assert resumed["val_loss"] == whole["val_loss"]

    optimizer = whole["trainer"].optimizers[0]
    groups = optimizer.param_groups
    assert {g["algorithm"] for g in groups} == {"muon", "adamw"}
    # the per-step scheduler reached every group: cosine to 0 at the last of 4 steps
    assert whole["trainer"].global_step == 4
    assert all(g["initial_lr"] > 0 and g["lr"] == pytest.approx(0.0, abs=1e-12) for g in groups)
    assert (tmp_path / "a" / "epoch=1.ckpt").is_file()


def test_the_script_runs(tmp_path, capsys):
    pl = importlib.import_module("lightning_module")
    assert pl.main(["--out", str(tmp_path), "--epochs", "1", "--data", "generated"]) == 0
    assert '"val_loss"' in capsys.readouterr().out


def test_progress_lines_when_stderr_is_not_a_terminal(tmp_path, capsys):
    """Under pytest stderr is not a terminal: lines instead of a bar, never silent."""
    pl = importlib.import_module("lightning_module")
    pl.train(tmp_path, epochs=1, progress_every=0.0, **SMALL)
    lines = capsys.readouterr().err.splitlines()
    assert any(line.startswith("epoch 0, step 1/2: train_loss ") for line in lines), lines
    assert any(line.startswith("epoch 0, step 2: val_loss ") for line in lines), lines
