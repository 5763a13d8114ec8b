"""The write side's layering: study/ reaches the read side's derivations in one place, and the
package's protocol model lives below every layer that reads it."""

from __future__ import annotations

import ast
from pathlib import Path

LIB = Path(__file__).resolve().parents[1] / "auditkit"


def _imports(path: Path):
    """(module imported, the top-level function or class it is imported in, or '') for each import."""
    tree = ast.parse(path.read_text("utf-8"))
    out = []
    for top in tree.body:
        where = top.name if isinstance(top, (ast.FunctionDef, ast.ClassDef)) else ""
        for n in ast.walk(top):
            if isinstance(n, ast.ImportFrom) and n.module:
                out.append((n.module, where))
            elif isinstance(n, ast.Import):
                out += [(a.name, where) for a in n.names]
    return out


def test_study_uses_derived_only_in_finalize_derived_outputs_and_never_report():
    reach = {(p.name, where) for p in sorted((LIB / "study").glob("*.py")) for mod, where in _imports(p)
             if mod.split(".")[:2] == ["auditkit", "derived"]}
    assert reach == {("finalize.py", "derived_outputs")}
    up = {(p.name, mod) for p in sorted((LIB / "study").glob("*.py")) for mod, _ in _imports(p)
          if mod.split(".")[:2] in (["auditkit", "report"], ["auditkit", "cli"], ["auditkit", "app"])}
    assert up == set()


MODEL = {"Budget", "Stage", "Gate", "Protocol", "PROTOCOL_JSON", "protocol_from_dict", "load_package_protocol"}


def test_no_layer_below_study_imports_the_protocol_model_from_study():
    below = [d for d in LIB.iterdir() if d.is_dir() and d.name not in ("study", "cli", "report", "__pycache__")]
    bad = sorted(f"{p.relative_to(LIB)}: {n.module}" for d in below for p in d.rglob("*.py")
                 for n in ast.walk(ast.parse(p.read_text("utf-8")))
                 if isinstance(n, ast.ImportFrom) and (n.module or "").startswith("auditkit.study")
                 and MODEL & {a.name for a in n.names})
    assert bad == []


def test_the_protocol_model_is_package_level():
    from auditkit.package import protocol
    from auditkit.study import spec

    assert spec.Protocol is protocol.Protocol and protocol.Protocol.__module__ == "auditkit.package.protocol"
    assert [m for m, _ in _imports(LIB / "package" / "protocol.py") if m.startswith("auditkit.")
            and not m.startswith(("auditkit.package.", "auditkit.errors"))] == []
