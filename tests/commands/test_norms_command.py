"""``normopt norms``: every registered norm checked live, and the polar methods against the SVD."""

import pytest
import torch

from normopt import norms as N
from normopt.cli import main
from normopt.commands import norms as command

ARGV = ["norms", "--shape", "4x6", "--trials", "40"]


def test_lists_every_registered_norm_and_every_identity_holds(capsys):
    assert main(ARGV) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.endswith(" ok") or line.endswith("FAIL")]
    assert len(rows) == len(N.names()), out  # one row per registry name, none by hand
    for norm in command.catalog():
        assert any(line.startswith(repr(norm)[:30]) for line in rows), repr(norm)
    assert "FAIL" not in out and out.rstrip().endswith("all dualize identities hold")
    for method in ("newton_schulz", "polar_express", "gram_newton_schulz"):
        assert method in out


def test_catalog_builds_one_norm_per_name():
    built = command.catalog()
    assert [n.name for n in built] == N.names()
    assert any(isinstance(n, N.ProductNorm) for n in built)


def test_a_wrong_dualize_fails_the_check(capsys, monkeypatch):
    """The command's verdict can fail: a dualize that is off by 1% is reported."""
    real = N.Spectral.dualize
    monkeypatch.setattr(N.Spectral, "dualize", lambda self, g: 1.01 * real(self, g))
    assert main(ARGV) == 1
    out = capsys.readouterr().out
    assert "SOME IDENTITIES FAILED" in out


def test_brute_force_beating_the_dual_norm_fails(capsys, monkeypatch):
    """A dualize that is not the maximizer, with a dual norm to match, keeps both identities
    (unit norm, <G, D> = dual norm) and is caught by the random directions alone."""

    def flat(self, g):  # the element dims as one (Frobenius is L2 on matrices)
        return g.flatten(start_dim=g.ndim - self.ndim)

    def smallest(self, g):  # the coordinate with the smallest |g_i|: far from the maximizer
        return flat(self, g).abs().argmin(dim=-1, keepdim=True)

    def weakest_axis(self, g):  # unit norm, <g, d> = |g_i|: both identities hold
        x = flat(self, g)
        i = smallest(self, g)
        d = torch.zeros_like(x).scatter_(-1, i, torch.where(x.gather(-1, i) < 0, -1.0, 1.0).to(x))
        return d.reshape(g.shape)

    monkeypatch.setattr(N.L2, "dualize", weakest_axis)
    monkeypatch.setattr(
        N.L2, "dual_norm", lambda self, g: flat(self, g).gather(-1, smallest(self, g)).abs()[..., 0]
    )
    assert main(ARGV) == 1
    out = capsys.readouterr().out
    (row,) = [line for line in out.splitlines() if line.startswith("L2()")]
    assert row.endswith("FAIL") and "1.000000000000" in row


@pytest.mark.parametrize("shape", ["0x3", "3", "axb"])
def test_bad_shape_is_refused(shape, capsys):
    with pytest.raises(SystemExit) as e:
        main(["norms", "--shape", shape])
    assert e.value.code == 2
    assert "--shape" in capsys.readouterr().err
