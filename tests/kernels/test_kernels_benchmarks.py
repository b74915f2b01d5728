"""The GPU benchmark scripts stay runnable: tiny CPU runs of both (the full --small runs are slow)."""

import json

import pytest

from benchmark_scripts import load_benchmark

pytestmark = pytest.mark.integration  # the benchmark scripts, tiny runs


def test_gpu_polar_tiny_run(tmp_path, capsys):
    out = tmp_path / "polar.json"
    args = ["--device", "cpu", "--shapes", "2x8x24,20x12", "--methods", "normopt.*,kernels.*"]
    assert (
        load_benchmark("gpu_polar").main(
            [*args, "--warmup", "0", "--repeat", "1", "--out", str(out)]
        )
        == 0
    )
    res = json.loads(out.read_text())
    rows = res["results"]
    assert {r["shape"] for r in rows} == {"2x8x24", "20x12"}
    assert all("error" not in r and r["ms"] > 0 and r["flops"] > 0 for r in rows)
    for r in rows:
        jordan = r["method"] in ("normopt.newton_schulz", "kernels.fused.jordan")
        low, high = (0.679, 1.2025) if jordan else (0.84, 1.125)  # SPEC A5 bands
        assert low <= r["resp_min"] and r["resp_max"] <= high, r
    assert "normopt.newton_schulz" in capsys.readouterr().out


def test_gpu_step_tiny_run(tmp_path):
    out = tmp_path / "step.json"
    mod = load_benchmark("gpu_step")
    assert (
        mod.main(
            [
                "--device",
                "cpu",
                "--small",
                "--parts",
                "step",
                "--warmup",
                "0",
                "--repeat",
                "1",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    rows = json.loads(out.read_text())["results"]
    names = {r["optimizer"] for r in rows}
    assert {"normopt.Muon", "normopt.Muon[reference]", "normopt.Muon[fused]"} <= names
    assert all("error" not in r for r in rows)
    assert rows[0]["matrices"] == 8  # 2 blocks of 4


@pytest.mark.slow
def test_small_runs_end_to_end(tmp_path):
    assert (
        load_benchmark("gpu_polar").main(
            ["--device", "cpu", "--small", "--out", str(tmp_path / "p.json")]
        )
        == 0
    )
    assert (
        load_benchmark("gpu_step").main(
            ["--device", "cpu", "--small", "--out", str(tmp_path / "s.json")]
        )
        == 0
    )
    rows = json.loads((tmp_path / "s.json").read_text())["results"]
    assert all("error" not in r for r in rows)
