"""benchmarks/step_overhead.py: its counters count what they claim, on a tiny model.

Nothing here is about normopt's own counts (the step engine is being rewritten); the
last test only checks that every row of the benchmark still runs.
"""

import json

import pytest
import torch

from benchmark_scripts import load_benchmark

pytestmark = pytest.mark.integration  # the step-overhead benchmark script, tiny runs

D, LAYERS = 16, 2


so = load_benchmark("step_overhead")


def _ops(make, d=D):
    return so.count_ops(so.stepper(make(so.gpt2_small_like(d, LAYERS))))


def _on_meta(make):
    return lambda: make(so.gpt2_small_like(D, LAYERS, device="meta"))


class _Planted(torch.optim.Optimizer):
    """SGD that reads the device once per step, in the way given."""

    def __init__(self, params, read):
        super().__init__(params, {"lr": 0.1})
        self.read = read

    @torch.no_grad()
    def step(self, closure=None):
        params = [p for g in self.param_groups for p in g["params"]]
        if self.read(torch.stack([p.grad.abs().amax() for p in params])):  # the one read
            for p in params:
                p.add_(p.grad, alpha=-self.defaults["lr"])


def test_model_layout():
    model = so.gpt2_small_like(D, LAYERS)
    names = dict(model.named_parameters())
    assert len(names) == 4 + 12 * LAYERS
    assert model.lm_head.weight is model.wte.weight and "lm_head.weight" not in names
    assert names["h.1.attn.c_attn.weight"].shape == (3 * D, D)
    assert names["h.1.mlp.c_proj.weight"].shape == (D, 4 * D)
    assert len(so.block_matrices(model)) == 4 * LAYERS
    assert all(p.grad is not None and p.grad.shape == p.shape for p in model.parameters())
    assert model(torch.randint(so.VOCAB, (2, 5))).shape == (2, 5, so.VOCAB)
    meta = so.gpt2_small_like(D, LAYERS, device="meta")
    assert all(p.device.type == "meta" and p.grad is not None for p in meta.parameters())


def test_op_counter():
    fused, ops = _ops(so.METHODS["torch.optim.AdamW[fused]"])
    assert 0 < fused < 10 and ops["aten._fused_adamw_.default"] == 1
    foreach = so.METHODS["torch.optim.AdamW[foreach]"]
    total, ops = _ops(foreach)
    assert total > fused and ops["aten._foreach_sqrt.default"] == 1
    assert _ops(foreach, d=2 * D)[0] == total  # the count does not depend on the width


def test_device_reads_of_torch_adamw_on_meta():
    assert so.count_device_reads(_on_meta(so.METHODS["torch.optim.AdamW[foreach]"])) == 0
    assert so.meta_step_completes(_on_meta(so.METHODS["torch.optim.AdamW[foreach]"])) is None


@pytest.mark.parametrize(
    "read",
    [
        lambda flags: flags.max().item() > 0,  # aten._local_scalar_dense
        lambda flags: bool((flags > 0).all()),
        lambda flags: flags.cpu().max() > 0,  # a copy to the CPU
    ],
    ids=["item", "bool", "cpu"],
)
def test_planted_read_is_counted_and_answered(read):
    def make():
        return _Planted(so.gpt2_small_like(D, LAYERS, device="meta").parameters(), read)

    reads = so.measure_device_reads(make)
    assert reads.reads == 1 and sum(reads.sites.values()) == 1
    assert so.meta_step_completes(make) is not None  # the plain meta step raises

    # The counter answers with real values (|g| > 0 here), so the update runs on the twins.
    with so.DeviceReadCounter() as counter:
        opt = make()
        p = opt.param_groups[0]["params"][0]
        before = counter.twin(p).clone()
        opt.step()
        assert not torch.equal(counter.twin(p), before)
    assert counter.reads == 0  # not counting outside measure_device_reads' counted step


def test_twins_keep_data():
    with so.DeviceReadCounter() as counter:
        counter.counting = True
        t = torch.tensor([1.5, -2.0], device="meta")
        z = torch.zeros(3, device="meta")
        e = torch.empty(4, device="meta")
        assert t.sum().item() == -0.5 and z.add(1).sum().item() == 3.0
        assert torch.isfinite(e.cpu()).all()
        v = z[1:]  # a view shares its base's twin
        v.add_(2.0)
        assert z.cpu().tolist() == [0.0, 2.0, 2.0]
        idx = torch.nonzero(z)  # a data-dependent shape is a read too
        assert idx.device.type == "meta" and idx.shape == (2, 1)
    assert counter.reads == 5 and counter.by_op["aten.nonzero.default"] == 1


def test_tiny_run(tmp_path, capsys):
    out = tmp_path / "overhead.json"
    argv = ["--width", str(D), "--layers", str(LAYERS), "--steps", "1", "--json", str(out)]
    assert so.main([*argv, "--verbose"]) == 0
    rows = json.loads(out.read_text())["results"]
    assert [r["optimizer"] for r in rows] == list(so.METHODS)
    assert all("error" not in r and r["ops"] > 0 and r["ms"] > 0 for r in rows)
    fused = next(r for r in rows if r["optimizer"] == so.REFERENCE)
    assert fused["ms_ratio"] == 1.0 and fused["ops"] == fused["ops_check_width"]
    text = capsys.readouterr().out
    assert "| optimizer | aten ops/step | device reads/step |" in text
    assert f"d={D} and d={2 * D}" in text
