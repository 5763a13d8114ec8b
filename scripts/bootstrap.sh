#!/usr/bin/env bash
# Set up auditkit in this checkout, on a fresh machine or again (then it is quick).
#
#   bash scripts/bootstrap.sh            # then: .venv/bin/auditkit ..., .venv/bin/python -m pytest
#
# 1. System packages (Debian/Ubuntu, only those missing, only as root; otherwise
#    it prints the apt-get line to run and stops).
# 2. The Python environment: inside an active virtual environment it installs
#    there (and points .venv at it); otherwise it creates .venv/ in the checkout
#    (reused when present).  A system Python is never installed into, so Debian's
#    "externally-managed-environment" refusal never comes up.
# 3. torch==2.13.0 (CPU) where the environment has no torch: an unpinned torch
#    would pull a multi-GB CUDA build.  Override with AUDITKIT_TORCH="torch==X".
# 4. auditkit itself, editable, with every extra (runner, figures, dask, test).
#    Skipped when nothing changed since the last run (pyproject.toml, checkout).
#
# Environment: PYTHON (default python3) picks the interpreter the venv is made from.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PY=${PYTHON:-python3}
TORCH_SPEC=${AUDITKIT_TORCH:-torch==2.13.0}
EXTRAS="runner,figures,dask,test"

say() { printf 'bootstrap: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

# --- 1. system packages ---------------------------------------------------------
# Debian packages this project needs, installed with apt-get when missing.  Add a
# package here (e.g. chromium for browser tests) with a comment saying what needs it.
APT_PACKAGES=(
    chromium   # tests/test_report_html.py: the HTML report in a real headless browser (driven by playwright; never `playwright install`)
)

command -v "$PY" >/dev/null 2>&1 || die "no '$PY' on PATH: install Python 3.11 or newer (Debian: apt-get install python3)"
"$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
    || die "$("$PY" --version 2>&1) is too old: auditkit needs Python 3.11 or newer (set PYTHON=/path/to/python3.11)"
IN_VENV=0
"$PY" -c 'import sys; sys.exit(sys.prefix == sys.base_prefix)' && IN_VENV=1
if [ "$IN_VENV" = 0 ] && ! "$PY" -c 'import ensurepip, venv' >/dev/null 2>&1; then
    # Debian splits venv's pip bootstrap into its own package
    APT_PACKAGES+=("python$("$PY" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')-venv")
fi

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
    command -v apt-get >/dev/null 2>&1 \
        || die "needs the system package(s) ${missing[*]} and there is no apt-get here: install them, then run this again"
    [ "$(id -u)" = 0 ] \
        || die "needs the system package(s) ${missing[*]}: run 'sudo apt-get update && sudo apt-get install -y ${missing[*]}', then this again"
    say "installing system package(s): ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# --- 2. the Python environment --------------------------------------------------
if [ "$IN_VENV" = 1 ]; then
    VENV_PY=$("$PY" -c 'import sys; print(sys.executable)')
    PREFIX=$("$PY" -c 'import sys; print(sys.prefix)')
    if [ ! -e .venv ] && [ ! -L .venv ]; then
        ln -s "$PREFIX" .venv   # so README's .venv/bin/... commands reach the environment in use
    elif [ "$(cd .venv 2>/dev/null && pwd -P)" != "$(cd "$PREFIX" && pwd -P)" ]; then
        say "note: installing into the active environment $PREFIX; this checkout's .venv is another one,"
        say "      so use $PREFIX/bin/auditkit where README.md says .venv/bin/auditkit"
    fi
else
    if [ -L .venv ] && ! .venv/bin/python -c '' >/dev/null 2>&1; then
        rm .venv   # a link to an environment that is gone (never the environment itself)
    fi
    if [ ! -e .venv ]; then
        say "creating .venv with $("$PY" -c 'import sys; print(sys.executable)')"
        "$PY" -m venv .venv
    elif ! .venv/bin/python -c '' >/dev/null 2>&1; then
        say "recreating .venv: its interpreter no longer runs"
        "$PY" -m venv --clear .venv
    fi
    VENV_PY=$ROOT/.venv/bin/python
    PREFIX=$ROOT/.venv
fi

# --- 3 and 4. torch, then auditkit ----------------------------------------------
STAMP="$PREFIX/.auditkit-bootstrap"
WANT="$ROOT $(cksum < pyproject.toml) $EXTRAS"
ready() {
    [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ] && "$VENV_PY" - "$ROOT" <<'EOF'
import importlib.util, os, sys
spec = importlib.util.find_spec("auditkit")
here = spec is not None and os.path.realpath(spec.origin).startswith(os.path.realpath(sys.argv[1]) + os.sep)
sys.exit(0 if here and all(importlib.util.find_spec(m) for m in
                           ("torch", "pyarrow", "matplotlib", "distributed", "pytest", "xdist")) else 1)
EOF
}
if ready; then
    say "already set up ($PREFIX)"
    exit 0
fi
if ! "$VENV_PY" -c 'import importlib.util, sys; sys.exit(importlib.util.find_spec("torch") is None)'; then
    say "installing $TORCH_SPEC (CPU build)"
    "$VENV_PY" -m pip install --quiet "$TORCH_SPEC"
fi
# The distribution is pretrain-auditkit. One named "auditkit" in this environment is either this
# checkout installed before the rename or the unrelated PyPI project of that name, whose module would
# shadow this one: either way it goes.
if "$VENV_PY" -m pip show --quiet auditkit > /dev/null 2>&1; then
    say "removing the distribution named auditkit (this project is pretrain-auditkit)"
    "$VENV_PY" -m pip uninstall --quiet -y auditkit
fi
say "installing auditkit (pretrain-auditkit, editable, extras $EXTRAS)"
"$VENV_PY" -m pip install --quiet -e ".[$EXTRAS]"
printf '%s' "$WANT" > "$STAMP"
say "ready: $PREFIX/bin/auditkit, $PREFIX/bin/python -m pytest"
