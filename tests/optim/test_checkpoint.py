"""Checkpoints: resume in a fresh process bit for bit, and refuse what does not fit.

A run is saved mid-training (``state_dict()`` of the optimizer and of the model), loaded
into a fresh optimizer in a *fresh Python process*, and continued: its weights must equal
the uninterrupted run's bit for bit (CPU). A state dict from another optimizer class or
another parameter layout is a ``ValueError``; ``torch.load(weights_only=True)`` reads every
state dict.
"""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from optim_cases import BY_NAME, CASES, IDS, build_optimizer, check_resume, make_mlp, train_steps
from torch import nn

import normopt
from normopt import norms as N

HERE = Path(__file__).resolve().parent
SRC = HERE.parents[1] / "src"
SAVED_AT, MORE = 3, 4  # steps before the checkpoint, steps after it


# The resumed runs: every row of the table in float32, and Muon on bf16 weights.
RESUMED = [(c.name, torch.float32) for c in CASES] + [("muon", torch.bfloat16)]
RESUMED_IDS = [f"{n}-{str(dt).removeprefix('torch.')}" for n, dt in RESUMED]


def _batch(t: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """The batch of step t: the same in every process."""
    g = torch.Generator().manual_seed(1000 + t)
    x = torch.randn(16, 6, generator=g)
    return x.to(dtype), (torch.sin(x[:, :3]) + 0.5 * x[:, 3:]).to(dtype)


def _run(key: str, model: nn.Module, opt: torch.optim.Optimizer, start: int, steps: int) -> None:
    name, dtype = _resumed(key)
    for t in range(start, start + steps):
        closure = _closure(model, opt, *_batch(t, dtype))
        if BY_NAME[name].needs_closure:
            opt.step(closure)
        else:
            closure()
            opt.step()


def _closure(model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor):
    def closure():
        opt.zero_grad()
        loss = (model(x) - y).square().mean()
        loss.backward()
        return loss

    return closure


def _resumed(key: str) -> tuple[str, torch.dtype]:
    return RESUMED[RESUMED_IDS.index(key)]


def _fresh(key: str, seed: int) -> tuple[nn.Module, torch.optim.Optimizer]:
    name, dtype = _resumed(key)
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 3)
    )
    model = model.to(dtype)
    return model, build_optimizer(BY_NAME[name], model)


def resume_in_this_process(folder: str, names: list[str]) -> None:
    """The fresh process: load each checkpoint into a new model and optimizer (built from a
    different seed, so only what was loaded can match), continue, save the weights."""
    for name in names:
        saved = torch.load(Path(folder) / f"{name}.pt", weights_only=True)
        model, opt = _fresh(name, seed=12345)
        model.load_state_dict(saved["model"])
        opt.load_state_dict(saved["opt"])
        _run(name, model, opt, saved["step"], MORE)
        torch.save([p.detach() for p in model.parameters()], Path(folder) / f"{name}.out.pt")


RESUME_SCRIPT = """\
import sys
folder, src, tests = sys.argv[1:4]
sys.path[:0] = [src, tests]
import torch
torch.set_num_threads(1)
import test_checkpoint
test_checkpoint.resume_in_this_process(folder, sys.argv[4:])
"""


@pytest.fixture(scope="module")
def resumed(tmp_path_factory) -> dict[str, tuple[list[torch.Tensor], list[torch.Tensor]]]:
    """key -> (uninterrupted weights, weights resumed in a fresh process); one subprocess
    resumes every row."""
    folder = tmp_path_factory.mktemp("checkpoints")
    expected = {}
    for name in RESUMED_IDS:
        model, opt = _fresh(name, seed=0)
        _run(name, model, opt, 0, SAVED_AT)
        ckpt = {"model": model.state_dict(), "opt": opt.state_dict(), "step": SAVED_AT}
        torch.save(ckpt, folder / f"{name}.pt")
        _run(name, model, opt, SAVED_AT, MORE)
        expected[name] = [p.detach().clone() for p in model.parameters()]
    script = folder / "resume.py"
    script.write_text(RESUME_SCRIPT)
    proc = subprocess.run(
        [sys.executable, str(script), str(folder), str(SRC), str(HERE), *RESUMED_IDS],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return {
        name: (expected[name], torch.load(folder / f"{name}.out.pt", weights_only=True))
        for name in RESUMED_IDS
    }


@pytest.mark.integration  # a subprocess
@pytest.mark.parametrize("name", RESUMED_IDS)
def test_resume_in_a_fresh_process_is_bit_for_bit(resumed, name):
    expected, got = resumed[name]
    assert len(expected) == len(got)
    for a, b in zip(expected, got):
        assert a.dtype == b.dtype and torch.equal(a, b), f"{name}: resumed run diverged"


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_low_precision_state_survives_a_round_trip(case):
    """bf16 parameters keep float32 state through save/load (torch's loader would cast it
    to bf16), so the resumed run equals the uninterrupted one bit for bit."""

    def float32_state(opt2: torch.optim.Optimizer) -> None:
        for p, st in opt2.state.items():
            for k, v in st.items():
                if isinstance(v, torch.Tensor) and v.is_floating_point():
                    assert v.dtype == (p.dtype if k == "prev_param" else torch.float32), k

    check_resume(case, before=2, after=2, dtype=torch.bfloat16, check_loaded=float32_state)


# -- what must not load ----------------------------------------------------------------------
def _stepped(opt: torch.optim.Optimizer) -> dict:
    for g in opt.param_groups:
        for p in g["params"]:
            p.grad = torch.randn_like(p)
    opt.step()
    return opt.state_dict()


def _w(*shape: int) -> nn.Parameter:
    return nn.Parameter(torch.randn(*shape))


MISMATCHES = [
    # (saved by, loaded into, what the message says)
    (
        lambda: normopt.Lion([_w(4, 3)]),
        lambda: normopt.LionK([_w(4, 3)], K=N.L1()),
        "saved by Lion, cannot be loaded into LionK",
    ),
    (
        lambda: normopt.Muon([_w(4, 3)]),
        lambda: normopt.MuonMVR2([_w(4, 3)]),
        "saved by Muon, cannot be loaded into MuonMVR2",
    ),
    (
        lambda: normopt.SteepestDescent([_w(4, 3)], norm=N.L2(), lr=0.1),
        lambda: normopt.TrustRegion([_w(4, 3)], norm=N.L2(), lr=0.1, alpha=0.5),
        "saved by SteepestDescent",
    ),
    (
        lambda: torch.optim.AdamW([_w(4, 3)]),
        lambda: normopt.Lion([_w(4, 3)]),
        "not saved by a normopt optimizer",
    ),
    (
        lambda: normopt.Lion([_w(4, 3), _w(3)]),
        lambda: normopt.Lion([{"params": [_w(4, 3)]}, {"params": [_w(3)]}]),
        "has 1 param groups, this optimizer has 2",
    ),
    (
        lambda: normopt.Lion([_w(4, 3), _w(3)]),
        lambda: normopt.Lion([_w(4, 3), _w(3), _w(3)]),
        "group 0 has 2 parameters, this optimizer's has 3",
    ),
    (  # same count, same number of entries, different shape
        lambda: normopt.Lion([_w(4, 3)]),
        lambda: normopt.Lion([_w(3, 4)]),
        r"shape \(4, 3\), the parameter has shape \(3, 4\)",
    ),
    (
        lambda: normopt.Muon([_w(4, 3), _w(6, 2)]),
        lambda: normopt.Muon([_w(6, 2), _w(4, 3)]),
        "shape",
    ),
    (  # the saved hyperparameters do not fit these tensors (no state to compare)
        lambda: normopt.SteepestDescent([_w(4, 3)], norm=N.Spectral(), lr=0.1),
        lambda: normopt.SteepestDescent([_w(12)], norm=N.L2(), lr=0.1),
        "group 0 does not fit this optimizer: norm: ",
    ),
]


MISMATCH_IDS = [
    "Lion-into-LionK",
    "Muon-into-MuonMVR2",
    "SteepestDescent-into-TrustRegion",
    "AdamW-into-Lion",
    "group-count",
    "param-count",
    "same-count-other-shape",
    "same-count-swapped-shapes",
    "norm-does-not-fit",
]


@pytest.mark.parametrize("saved_by,loaded_into,message", MISMATCHES, ids=MISMATCH_IDS)
def test_a_state_dict_that_does_not_fit_is_a_value_error(saved_by, loaded_into, message):
    sd = _stepped(saved_by())
    opt = loaded_into()
    before = opt.state_dict()
    groups_before = [dict(g) for g in opt.param_groups]
    with pytest.raises(ValueError, match=message):
        opt.load_state_dict(sd)
    assert len(opt.state) == 0 and before["state"] == {}  # nothing was half-loaded
    assert [dict(g) for g in opt.param_groups] == groups_before


def test_a_tampered_hyperparameter_is_refused():
    opt = normopt.Lion([_w(4, 3)])
    sd = _stepped(opt)
    sd["param_groups"][0]["lr"] = -1.0
    with pytest.raises(ValueError, match="lr"):
        normopt.Lion([_w(4, 3)]).load_state_dict(sd)


def test_a_group_key_missing_from_an_older_state_dict_takes_its_default():
    sd = _stepped(normopt.Lion([_w(4, 3)], nonfinite="raise"))
    del sd["param_groups"][0]["nonfinite"]
    opt = normopt.Lion([_w(4, 3)])
    opt.load_state_dict(sd)
    assert opt.param_groups[0]["nonfinite"] == "skip"
    _stepped(opt)


def test_loaded_state_is_a_copy_not_a_view_of_the_state_dict():
    sd = _stepped(normopt.Muon([_w(4, 3)]))
    a, b = normopt.Muon([_w(4, 3)]), normopt.Muon([_w(4, 3)])
    a.load_state_dict(sd)
    b.load_state_dict(sd)
    (buf_a,) = [st["momentum_buffer"] for st in a.state.values()]
    (buf_b,) = [st["momentum_buffer"] for st in b.state.values()]
    kept = buf_a.clone()
    for st in sd["state"].values():
        st["momentum_buffer"].fill_(7.0)
    assert torch.equal(buf_a, kept)
    assert buf_a.untyped_storage().data_ptr() != buf_b.untyped_storage().data_ptr()


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_weights_only_load_reads_every_state_dict(case):
    model = make_mlp()
    opt = build_optimizer(case, model)
    train_steps(case, model, opt, 2)
    buf = io.BytesIO()
    torch.save(opt.state_dict(), buf)
    buf.seek(0)
    sd = torch.load(buf, weights_only=True)
    # the class is named in every group, which torch.distributed.checkpoint keeps
    assert {g["normopt_optimizer"] for g in sd["param_groups"]} == {type(opt).__name__}
    build_optimizer(case, make_mlp()).load_state_dict(sd)
