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

# --- optional step (issue 13, the report): headless Chromium for tests/test_report_html.py -------
# The HTML report is tested in a real browser: Debian's `chromium`, driven by the `playwright`
# package of the test extra (never `playwright install`, which downloads its own browsers).
# Installed here only where it is missing and we can: as root, with apt-get (Debian/Ubuntu).
# Elsewhere the test fails with a message saying how to install it; it is never skipped.
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
# --- end of the optional step --------------------------------------------------------------------
