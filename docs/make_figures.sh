#!/usr/bin/env bash
# Regenerate the guide's figures from the harness (docs/_static/*.png, committed):
#   - `normopt compare` on the `digits` task (scikit-learn's 8x8 digits, an MLP): AdamW,
#     Muon, NorMuon and Lion from the same init and data order; its loss curves.
#   - `normopt sweep` on the same task: final validation loss against learning rate.
# Both together take well under a minute on one core. Rerun after a change to the
# optimizers or the harness, then rebuild the docs. The numbers the guide quotes come
# from BENCHMARKS.md (more seeds), not from these single-seed runs.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
# PYTHONPATH=src: this checkout's normopt, whichever one pip installed.
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
"$PY" -m normopt.cli compare --task digits --optimizers adamw,muon,normuon,lion \
  --seeds 1 --threads 1 --quiet --out "$OUT/compare"
"$PY" -m normopt.cli sweep --task digits --optimizers adamw,muon,lion,sign \
  --lr-factors 0.125,0.25,0.5,1,2,4,8 --seeds 1 --threads 1 --quiet --out "$OUT/sweep"
mkdir -p docs/_static
cp "$OUT/compare/loss_vs_step.png" docs/_static/digits_loss_vs_step.png
cp "$OUT/compare/loss_vs_time.png" docs/_static/digits_loss_vs_time.png
cp "$OUT/sweep/sweep.png" docs/_static/digits_sweep.png
echo "figures written to docs/_static/"
