"""The runner writes every file through one atomic writer (runner/files.py) and stays free of auditkit."""

from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest

from auditkit.runner.files import atomic_write, cache_dir, temporary_path

RUNNER = Path(__file__).resolve().parents[1] / "runner"


def _writes(tree: ast.AST) -> list[str]:
    """Calls that write or rename a file: os.replace/os.rename, Path.write_text/write_bytes, open() for
    writing, and np.save to anything but an in-memory buffer (a name bound to io.BytesIO())."""
    buffers = {t.id for n in ast.walk(tree) if isinstance(n, ast.Assign) and ast.unparse(n.value) == "io.BytesIO()"
               for t in n.targets if isinstance(t, ast.Name)}
    out = []
    for n in ast.walk(tree):
        if not isinstance(n, ast.Call):
            continue
        f = ast.unparse(n.func)
        mode = [ast.unparse(a) for a in n.args[1:2]] + [ast.unparse(k.value) for k in n.keywords if k.arg == "mode"]
        if f in ("os.replace", "os.rename") or f.endswith((".write_text", ".write_bytes")) \
                or (f == "open" and any(c in m for m in mode for c in "wax")) \
                or (f == "np.save" and not (n.args and isinstance(n.args[0], ast.Name) and n.args[0].id in buffers)):
            out.append(f)
    return out


def test_only_files_py_writes_or_renames_files():
    writes = {p.name: sorted(w) for p in sorted(RUNNER.glob("*.py")) if (w := _writes(ast.parse(p.read_text("utf-8"))))}
    assert writes == {"files.py": ["open", "os.replace"]}


def test_the_runner_imports_nothing_of_auditkit():
    for p in sorted(RUNNER.glob("*.py")):
        for n in ast.walk(ast.parse(p.read_text("utf-8"))):
            names = [a.name for a in n.names] if isinstance(n, ast.Import) else \
                [n.module or ""] if isinstance(n, ast.ImportFrom) else []
            assert not [m for m in names if m.split(".")[0] == "auditkit"], p.name


def test_atomic_write_replaces_whole_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "summary.json"
    atomic_write(target, b"old")
    atomic_write(target, b"new bytes")
    assert target.read_bytes() == b"new bytes"
    assert sorted(os.listdir(tmp_path)) == ["summary.json"]
    # the name auditkit.study.runs removes when it kills a runner
    assert temporary_path(target).name == f".summary.json.tmp-{os.getpid()}"


def test_a_failed_write_keeps_the_old_file_and_removes_its_temporary(tmp_path):
    target = tmp_path / "checkpoint.safetensors"
    atomic_write(target, b"weights")
    with pytest.raises(TypeError):
        atomic_write(target, "not bytes")
    assert target.read_bytes() == b"weights"
    assert sorted(os.listdir(tmp_path)) == ["checkpoint.safetensors"]


def test_cache_dir_follows_auditkit_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("AUDITKIT_CACHE", str(tmp_path / "c"))
    assert cache_dir() == tmp_path / "c"
