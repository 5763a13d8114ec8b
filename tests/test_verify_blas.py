"""`verify` asks numpy's OpenBLAS for one thread before numpy is imported (it does no linear algebra,
and a thread per core started at numpy's import takes CPU from the hashing readers), never over the
user's own setting, and not once numpy is in (where it could no longer take effect)."""

from __future__ import annotations

import os
import subprocess
import sys

from auditkit.cli.cmd_verify import one_blas_thread


def test_one_thread_unless_the_user_chose_or_numpy_is_in():
    env: dict[str, str] = {}
    one_blas_thread(env, {})
    assert env == {"OPENBLAS_NUM_THREADS": "1"}
    env = {"OPENBLAS_NUM_THREADS": "8"}
    one_blas_thread(env, {})
    assert env == {"OPENBLAS_NUM_THREADS": "8"}
    env = {}
    one_blas_thread(env, {"numpy": object()})
    assert env == {}


def test_numpy_imported_after_it_starts_no_thread():
    code = ("import os; from auditkit.cli.cmd_verify import one_blas_thread; one_blas_thread(); import numpy; "
            "print(len(os.listdir('/proc/self/task')))")
    env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert out.stdout.strip() == "1"
