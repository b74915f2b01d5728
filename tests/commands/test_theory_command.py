"""``normopt theory``: the Adam-versus-Muon table."""

import json
import math

import pytest

from normopt.cli import main
from normopt.theory import constants, kovalev_schedule


def test_runs_with_no_flags(capsys):
    assert main(["theory"]) == 0
    out = capsys.readouterr().out
    assert "768x3072" in out and "spectral (Muon)" in out and "max-entry (Adam/sign)" in out
    assert "Adam/Muon" in out


def test_json_matches_the_library(capsys):
    argv = ["theory", "--shape", "64x256", "--eps", "0.5", "--sigma", "0.2", "--delta0", "3",
            "--Lf", "2", "--json"]  # fmt: skip
    assert main(argv) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["shape"] == [64, 256]
    cols = {c["norm"]: c for c in res["norms"]}
    assert set(cols) == {"max_entry", "frobenius", "spectral", "rms_to_rms"}
    for name, col in cols.items():
        c = constants(name, (64, 256), Lf=2.0)
        s = kovalev_schedule(0.5, c.L, c.rho, 0.2, 3.0)
        assert (col["rho"], col["L"], col["eta"], col["alpha"], col["K"]) == (
            c.rho, c.L, s.eta, s.alpha, s.K
        )  # fmt: skip
        assert col["bound"] <= 0.5
    assert cols["spectral"]["rho"] == pytest.approx(8.0)
    assert res["ratio_adam_over_muon"]["rho"] == pytest.approx(math.sqrt(64 * 256) / 8)


def test_norm_choice_and_deterministic(capsys):
    assert main(["theory", "--norms", "linf,spectral", "--sigma", "0", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert [c["norm"] for c in res["norms"]] == ["linf", "spectral"]
    assert all(c["alpha"] == 1.0 for c in res["norms"])
    assert "ratio_adam_over_muon" in res


@pytest.mark.parametrize(
    "argv",
    [["--eps", "0"], ["--eps", "-1"], ["--sigma", "-1"], ["--shape", "12"], ["--shape", "ax3"],
     ["--Lf", "nan"]],
)  # fmt: skip
def test_bad_flags_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as e:
        main(["theory", *argv])
    assert e.value.code == 2


def test_unknown_norm_is_one_line(capsys):
    assert main(["theory", "--norms", "nope"]) == 2
    assert "unknown norm" in capsys.readouterr().err
