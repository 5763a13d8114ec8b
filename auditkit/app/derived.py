"""The derived outputs of a package: `tables`, `figures` (regenerated, or checked with `check`) and
`counterfactual` (a protocol's planned GPU-hours)."""

from __future__ import annotations

from pathlib import Path

from auditkit.app.checks import add_source_findings
from auditkit.app.outcome import Outcome
from auditkit.errors import AuditError
from auditkit.findings import Report


def refuse_format(fmt: str, *, check: bool, profile: str | None = None) -> None:
    """SARIF and JUnit report a check, so they need `check` (and no profile)."""
    if fmt in ("sarif", "junit") and (not check or profile):
        raise AuditError(f"--format {fmt} reports a check: it needs --check" + (" and no --profile" if profile else ""),
                         hint="add --check, or use --format text or json")


def _writes_from(src, in_place: bool) -> None:
    if in_place and src.kind != "directory":
        raise AuditError("--in-place rewrites the package's own files, so it needs a package directory",
                         path=src.given, hint="an archive or URL is read-only: use --check, or --out DIR")


def _defect(command: str, package: str, exc) -> Outcome:
    """A defective package file found while generating: a finding (exit 1), not "could not check"."""
    report = Report(command=command, target=str(package))
    report.add(exc.finding)
    return Outcome(command, report, package=package)


def _written(written, what: str) -> Outcome:
    """What writing the tables or figures did: the files, where, which changed (and a stale MANIFEST)."""
    from auditkit.derived.output import stale_manifest

    out = Outcome(what, doc={"ok": True, "exit_code": 0, what: list(written), "dest": str(written.dest),
                             "changed": list(written.changed)},
                  lines=[f"wrote {len(written)} {what[:-1]} file(s) and {what[:-1]}_manifest.json under "
                         f"{written.dest} ({len(written.changed)} changed)"])
    if stale_manifest(written.dest, written.changed):
        out.warnings.append(f"warning: {written.dest}/MANIFEST.json is now stale ({len(written.changed)} file(s) "
                            f"changed); rebuild it with: auditkit manifest build {written.dest}")
    return out


def tables(src, *, out: str | None = None, in_place: bool = False, force: bool = False, check: bool = False,
           profile: str | None = None) -> Outcome:
    """Regenerate the package's derived tables (CSV + JSON) and table_manifest.json, or check them."""
    from auditkit.errors import PackageDefect

    package = str(src.root)
    if profile:
        from auditkit.app.profiled import check_tables_profiled

        return check_tables_profiled(src, profile, check=check, out=out)
    from auditkit.derived.tables import check_tables, generate_tables

    _writes_from(src, in_place)
    try:
        if check:
            return Outcome("tables", add_source_findings(check_tables(package), src), package=package)
        return _written(generate_tables(package, out, in_place=in_place, force=force), "tables")
    except PackageDefect as exc:
        return _defect("tables", package, exc)


def figures(src, *, out: str | None = None, in_place: bool = False, force: bool = False,
            check: bool = False) -> Outcome:
    """Regenerate the package's figures (PNG) and figure_manifest.json, or check them."""
    from auditkit.errors import PackageDefect

    package = str(src.root)
    _writes_from(src, in_place)
    try:
        from auditkit.derived.figures import check_figures, generate_figures

        if check:
            return Outcome("figures", add_source_findings(check_figures(Path(package)), src), package=package)
        written = generate_figures(Path(package), Path(out) if out else None, in_place=in_place, force=force)
    except ImportError as exc:
        raise AuditError(f"figures need matplotlib: {exc}", hint="pip install 'pretrain-auditkit[figures]'") from None
    except PackageDefect as exc:
        return _defect("figures", package, exc)
    return _written(written, "figures")


def manifest_counterfactual(manifest_path: str | Path) -> list[dict]:
    """`protocol_counterfactual` of a hand-written manifest TOML (its matrix counted)."""
    from auditkit.derived.accounting import protocol_counterfactual
    from auditkit.package.rows import read_csv_text
    from auditkit.study.spec import load_manifest

    m = load_manifest(manifest_path)
    try:
        _, rows = read_csv_text(m.matrix_file.read_text("utf-8"), str(m.matrix_file))
    except OSError as exc:
        raise AuditError(f"cannot read the matrix: {exc}", path=str(m.matrix_file)) from exc
    return protocol_counterfactual(m.protocol, m.rules, len(rows))


def counterfactual(manifest_path: str) -> Outcome:
    """Planned training GPU-hours of a protocol manifest, and each gate's continue-everything counterfactual."""
    from tabulate import tabulate

    rows = manifest_counterfactual(manifest_path)
    cols = ("item", "stage", "gate", "candidates", "cells", "budget_seconds")
    table = tabulate([[r[k] for k in cols] + [f"{r['gpu_hours']:.1f}" if r["gpu_hours"] is not None else "-"]
                      for r in rows],
                     headers=["item", "stage", "gate", "candidates", "cells", "budget_s", "gpu_hours"],
                     disable_numparse=True, missingval="-")
    return Outcome("counterfactual", doc={"ok": True, "exit_code": 0, "rows": rows}, lines=[table])
