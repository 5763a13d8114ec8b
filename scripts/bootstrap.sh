#!/usr/bin/env bash
# Set up auditkit on a fresh machine: the pinned CPU build of torch where no
# torch is present (an unpinned torch would pull a multi-GB CUDA build), then
# auditkit itself with every extra (runner, figures, dask, tests).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if ! "$PY" -c "import torch" >/dev/null 2>&1; then
    "$PY" -m pip install --quiet "torch==2.13.0"
fi
"$PY" -m pip install --quiet -e ".[runner,figures,dask,test]"
