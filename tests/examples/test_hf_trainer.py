"""examples/hf_trainer.py: Hugging Face's Trainer with normopt.Muon, a few steps each."""

import importlib
import shutil

import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("accelerate")

# tiny runs: batches of 8 windows of 64 characters of the generated text
SMALL = dict(data="generated", batch_size=8, train_windows=128, eval_windows=32, warmup=2)


@pytest.fixture
def hf():
    return importlib.import_module("hf_trainer")


@pytest.mark.parametrize("optimizer", ["normopt", "torch-muon"])
def test_resume_from_a_checkpoint_is_exact(hf, tmp_path, optimizer):
    whole = hf.train(tmp_path / "a", steps=6, save_steps=3, optimizer=optimizer, **SMALL)
    (tmp_path / "b").mkdir()
    shutil.copytree(tmp_path / "a" / "checkpoint-3", tmp_path / "b" / "checkpoint-3")
    resumed = hf.train(
        tmp_path / "b", steps=6, save_steps=3, resume=True, optimizer=optimizer, **SMALL
    )
    a = dict(whole["trainer"].model.named_parameters())
    b = dict(resumed["trainer"].model.named_parameters())
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
    assert resumed["eval_loss"] == whole["eval_loss"]
    # both halves learn: 6 steps take the loss well below the untrained model's (~ln 12)
    assert whole["eval_loss"] < whole["initial_eval_loss"] - 0.3


def test_the_scheduler_reaches_every_group(hf, tmp_path):
    import transformers

    seen = []

    class Record(transformers.TrainerCallback):
        def on_step_end(self, args, state, control, optimizer=None, **kwargs):
            seen.append(
                [(g["algorithm"], g["lr"], g["initial_lr"]) for g in optimizer.param_groups]
            )

    steps, warmup = 6, 2
    result = hf.train(
        tmp_path,
        steps=steps,
        schedule="linear",
        callbacks=[Record()],
        **{**SMALL, "warmup": warmup},
    )
    algorithms = {a for a, _, _ in seen[0]}
    assert algorithms == {"muon", "adamw"}
    assert {lr0 for a, _, lr0 in seen[0] if a == "muon"} == {0.02}
    assert {lr0 for a, _, lr0 in seen[0] if a == "adamw"} == {
        result["optimizer"].defaults["adamw_lr"]
    }
    assert len(seen) == steps
    for step, groups in enumerate(seen, start=1):
        # get_scheduler("linear"): warmup to 1, then linearly to 0 at `steps`
        want = step / warmup if step < warmup else (steps - step) / (steps - warmup)
        for algorithm, lr, lr0 in groups:
            assert lr == pytest.approx(want * lr0, rel=1e-12, abs=1e-15), (step, algorithm)


def test_the_script_runs(hf, tmp_path, capsys):
    argv = ["--out", str(tmp_path), "--steps", "2", "--warmup", "1", "--data", "generated"]
    assert hf.main(argv) == 0
    out = capsys.readouterr().out
    assert "attn.c_attn.weight" in out and "split into 3" in out  # normopt.describe's table
    assert '"eval_loss"' in out


@pytest.mark.parametrize("optimizer", ["normopt", "torch-muon"])
def test_the_logs_hold_each_algorithms_learning_rate(hf, tmp_path, optimizer):
    """Trainer's own "learning_rate" is one group's; the example logs Muon's and AdamW's."""
    result = hf.train(tmp_path, steps=4, optimizer=optimizer, schedule="linear", **SMALL)
    logged = [h for h in result["trainer"].state.log_history if "learning_rate" in h]
    assert logged
    groups = {g["algorithm"]: g["initial_lr"] for g in result["optimizer"].param_groups}
    for entry in logged:
        step = entry["step"]  # linear warmup over 2 steps, then linearly to 0 at step 4
        factor = step / 2 if step < 2 else (4 - step) / 2
        assert entry["lr_muon"] == pytest.approx(factor * groups["muon"], abs=1e-12)
        assert entry["lr_adamw"] == pytest.approx(factor * groups["adamw"], abs=1e-12)
