"""The reviewer's report of one package, as data: `build_report(package_dir) -> dict`.

It runs what a reviewer would run — verify, replay every gate, regenerate the tables
and the figures' data, evaluate the claims — and gathers, per gate, the per-cell table
(promoted and eliminated marked, with the reasons), the checks with their values and
thresholds, the robustness of the decision, the freeze evidence where the package or
the caller supplies it; the host correlations with their intervals; the figures inline
as ``data:`` URIs; the environment. `render_html` and `render_markdown` turn it into a
page. Nothing is written; the package is only read.
"""

from __future__ import annotations

import base64
import platform
import sys
from pathlib import Path

from auditkit import __version__
from auditkit.errors import AuditError
from auditkit.findings import Report

REPORT_SCHEMA = "auditkit/report/v1"


def verdict(name: str, command: str, report: Report | None, error: str = "", summary: str = "") -> dict:
    if report is None:
        return {"check": name, "status": "not run", "ok": None, "summary": error, "command": command,
                "findings": [], "counts": {}}
    checked = ", ".join(f"{n} {k}" for k, n in report.checked.items())
    return {"check": name, "status": "OK" if report.ok else "FAILED", "ok": report.ok,
            "summary": summary or (f"{len(report.findings)} finding(s)" if report.findings else "no findings")
            + (f" ({checked})" if checked else ""),
            "command": command, "findings": [f.to_dict() for f in report.sorted_findings()],
            "counts": report.counts()}


def build_report(package_dir: str | Path, *, claims: str | Path | dict | None = None,
                 freeze_evidence: dict | None = None, trust=None, require=(), figures: bool = True,
                 generated_at: str | None = None, jobs: int | None = None, verified: Report | None = None) -> dict:
    """Everything the page shows, as JSON-ready data. `claims`: a claims document or file (default:
    the package's own `claims.json`, when it has one). `freeze_evidence`: gate -> evidence object
    (`level`, `time`, `authority`, `first_input_started_at`, ...) where the caller has it already;
    otherwise it is graded here (`auditkit.evidence`, with `trust` — an `evidence.level.Trust` —
    and the `require`d levels) and is a verdict of its own. Raises AuditError when the package
    cannot be read at all. `verified`: the package's verify report where the caller has it already
    (an archive verified as it was streamed), so it is not verified twice."""
    from auditkit.gates.documents import package_protocol
    from auditkit.gates.replay import replay_all, replay_report
    from auditkit.derived.package_data import DecidedGates
    from auditkit.derived.tables import build_tables, check_tables
    from auditkit.verify import verify_package

    pkg = Path(package_dir)
    protocol = package_protocol(pkg)
    target = str(pkg)
    verdicts = []

    ver = verified if verified is not None else verify_package(pkg, jobs=jobs)   # `verified`: the caller's own
    verdicts.append(verdict("verify", f"auditkit verify {pkg}", ver))
    # said, not left out: a reader must not take the page for a re-evaluation of the checkpoints
    verdicts.append(verdict("re-evaluation", f"auditkit verify {pkg} --deep", None,
                             "not run: this report does not re-evaluate the checkpoints' val_bpb; "
                             f"auditkit verify {pkg} --deep does (it needs torch, and minutes to hours)"))
    root = {"recorded": ver.info.get("root (recorded)"), "computed": ver.info.get("root (of the files)")}

    replays = replay_all(pkg)
    from auditkit.gates.replay import attach_uncertainty

    attach_uncertainty(pkg, replays, 0.95)   # the checks' intervals and calls lead the page
    rep = replay_report(replays, target)
    verdicts.append(verdict("replay", f"auditkit replay-gate all --package {pkg}", rep))
    if freeze_evidence is None:
        freeze_evidence = _freeze_evidence(pkg, trust, require, verdicts)

    decided = DecidedGates(pkg)    # every gate decided from the raw rows once, for the tables and the claims
    try:
        built = build_tables(pkg, decided)
    except AuditError:             # check_tables reports it (a defective file is a finding)
        built = None
    try:
        tab = check_tables(pkg, built)
        verdicts.append(verdict("tables", f"auditkit tables --package {pkg} --check", tab))
    except AuditError as exc:
        verdicts.append(verdict("tables", f"auditkit tables --package {pkg} --check", None, exc.message))
    try:
        from auditkit.derived.figures import check_figures

        fig = check_figures(pkg)
        verdicts.append(verdict("figures", f"auditkit figures --package {pkg} --check", fig))
    except ImportError:
        verdicts.append(verdict("figures", f"auditkit figures --package {pkg} --check", None,
                                 "not checked: matplotlib is not installed (pip install 'pretrain-auditkit[figures]')"))
    except AuditError as exc:
        verdicts.append(verdict("figures", f"auditkit figures --package {pkg} --check", None, exc.message))

    if built is None:
        built = build_tables(pkg, decided)
    tables = {t.id: t for t in built}
    claim_rows, claims_note = _claims(pkg, claims, verdicts, built, decided)
    gates = [_gate(pkg, r, tables, (freeze_evidence or {}).get(r.gate, getattr(r, "freeze_evidence", None)))
             for r in replays]
    return {
        "schema": REPORT_SCHEMA,
        "package": target,
        "name": protocol.name,
        "generated_at": generated_at,
        "root": root,
        "ok": all(v["ok"] is not False for v in verdicts),
        "verdicts": verdicts,
        "claims": claim_rows,
        "claims_note": claims_note,
        "support": _support(claim_rows, gates),
        "gates": gates,
        "host_correlation": _rows(tables.get("host_correlation_interval")),
        "figures": _figures(pkg) if figures else [],
        "environment": environment(),
    }


def _freeze_evidence(pkg: Path, trust, require, verdicts: list) -> dict | None:
    """Per gate, the strongest freeze evidence that holds (`auditkit.evidence`); its findings
    (contradicting evidence, a `require`d level not met) make a verdict."""
    try:
        from auditkit.evidence.report import add_freeze_evidence
    except ImportError:  # pragma: no cover - evidence's libraries are base dependencies
        return None
    command = f"auditkit replay-gate all --package {pkg}" + "".join(f" --require {r}" for r in require)
    rep = Report("evidence", str(pkg))
    try:
        add_freeze_evidence(rep, pkg, None, trust, list(require))
    except AuditError as exc:
        verdicts.append(verdict("freeze evidence", command, None, exc.message))
        return None
    levels = sorted({str(e.get("level")) for e in (rep.info.get("freeze_evidence") or {}).values()})
    verdicts.append(verdict("freeze evidence", command, rep,
                             summary=("levels: " + ", ".join(levels) if levels else "no gate graded")
                             + (f"; {len(rep.findings)} finding(s)" if rep.findings else "")))
    return rep.info.get("freeze_evidence")


def _claims(pkg: Path, claims, verdicts: list, tables: list, decided=None) -> tuple[list[dict], str]:
    from auditkit.report.claims import CLAIMS_FILE, claims_report, evaluate_claims

    command = f"auditkit claims --package {pkg}"
    if claims is None and not (pkg / CLAIMS_FILE).is_file():
        verdicts.append(verdict("claims", command, None, "the package has no claims.json"))
        return [], "The package carries no claims.json (docs/SPEC.md, 'v1.1: claims.json')."
    try:
        results = evaluate_claims(pkg, claims, tables=tables, decided=decided)
    except AuditError as exc:
        verdicts.append(verdict("claims", command, None, exc.diagnostics()))
        return [], exc.diagnostics()
    verdicts.append(verdict("claims", command, claims_report(results, str(pkg))))
    return [r.to_dict() for r in results], ""


def _rows(table) -> list[dict]:
    return [] if table is None else [dict(zip(table.columns, r)) for r in table.rows]


def _gate(pkg: Path, r, tables: dict, evidence: dict | None) -> dict:
    from auditkit.gates.reasons import reasons_of_document

    doc = r.replayed_doc() or r.recorded_doc()
    out = {"gate": r.gate, "rules_path": r.rules_path, "identical": r.identical,
           "differences": [f.to_dict() for f in r.findings], "freeze_evidence": evidence,
           "freeze_evidence_text": _describe(evidence),
           "frozen_at": (r.rules or {}).get("frozen_at"), "first_input_started_at": r.first_input_start,
           "top_k": None, "always_keep": [], "cells": [], "candidates": [], "checks": [], "promoted": [],
           "robustness": None, "sensitivity": []}
    u = getattr(r, "uncertainty", None)
    if u is not None:
        from auditkit.report.forest import forest_data_uri

        out["uncertainty"] = u.to_json()
        out["forest"] = forest_data_uri(out["uncertainty"])
    if r.rules:
        out["top_k"] = r.rules["promote"]["top_k"]
        out["always_keep"] = list(r.rules["promote"].get("always_keep", []))
        out["metric"] = r.rules["metric"]
    if doc is None:
        return out
    keys = [f"{h}/{s}" for h, s in doc["cells"]]
    why = reasons_of_document(doc, r.rules) if r.rules else {}
    promoted = list(doc["promoted"])
    rob = {row["config_id"]: row for row in _rows(tables.get("robustness")) if row["gate"] == r.gate}
    out.update(cells=keys, promoted=promoted)
    for c in doc["candidates"]:
        cells = [c.get("cells", {}).get(k, {"val_bpb": None, "rank": None, "status": "missing"}) for k in keys]
        state = "ineligible" if not c["eligible"] else ("promoted" if c["config_id"] in promoted else "eliminated")
        out["candidates"].append({"config_id": c["config_id"], "rank": c.get("rank"), "state": state,
                                  "mean": c.get("mean"), "std": c.get("std"), "wins": c.get("wins"),
                                  "cells": [{"value": x.get("val_bpb"), "rank": x.get("rank"),
                                             "status": x.get("status", "ok")} for x in cells],
                                  "reason": why.get(c["config_id"], ""),
                                  "robustness": rob.get(c["config_id"])})
    flips = {row["check"]: row for row in _rows(tables.get("robustness_checks")) if row["gate"] == r.gate}
    for i, ch in enumerate(doc["checks"]):
        out["checks"].append({**ch, "robustness": flips.get(i)})
    out["robustness"] = next((row for row in _rows(tables.get("robustness_gates")) if row["gate"] == r.gate), None)
    out["sensitivity"] = [row for row in _rows(tables.get("promotion_sensitivity")) if row["gate"] == r.gate]
    return out


def _support(claims: list[dict], gates: list[dict]) -> dict:
    """What the page leads with: counts of the claims' and the checks' calls (held / not held /
    undetermined; pass / fail / undetermined), beside the point-estimate outcomes."""
    def count(xs):
        out: dict[str, int] = {}
        for x in xs:
            out[x] = out.get(x, 0) + 1
        return out

    checks = [dict(c, gate=g["gate"]) for g in gates for c in (g.get("uncertainty") or {}).get("checks", [])]
    level = next((g["uncertainty"]["level"] for g in gates if g.get("uncertainty")), 0.95)
    return {"level": level,
            "claims": count(c.get("call", "undetermined") for c in claims if c["outcome"] != "not_checkable"),
            "claims_outcome": count(c["outcome"] for c in claims),
            "checks": checks, "check_calls": count(c["call"] for c in checks),
            "forests": [{"gate": g["gate"], "uri": g["forest"]} for g in gates if g.get("forest")]}


def _describe(evidence: dict | None) -> str:
    """One line for a gate's freeze evidence (`evidence.level.describe`), or the non-empty fields."""
    if not evidence:
        return ""
    try:
        from auditkit.evidence.require import describe

        return describe(evidence)
    except (ImportError, KeyError, TypeError, ValueError):
        return "; ".join(f"{k} {v}" for k, v in evidence.items() if k != "level" and v not in (None, "", [], {}))


def _figures(pkg: Path) -> list[dict]:
    """The package's own figures (as its figure_manifest.json lists them), inline as data: URIs;
    read through the package's store (a link, a FIFO or a defective manifest: no figures)."""
    from auditkit.package.store import PackageStore

    try:
        store = PackageStore(pkg)
        if store.kind("figure_manifest.json") != "file":
            return []
        entries = store.read_json("figure_manifest.json").get("figures", [])
    except (AuditError, AttributeError):
        return []
    out = []
    for e in entries if isinstance(entries, list) else []:
        if not isinstance(e, dict) or not isinstance(e.get("path"), str) or not e["path"].lower().endswith(".png"):
            continue
        try:
            data = store.read_bytes(e["path"])
        except AuditError:
            continue
        if data[:8] != b"\x89PNG\r\n\x1a\n":
            continue
        out.append({"id": e.get("id", Path(e["path"]).stem), "kind": e.get("kind", ""), "path": e.get("path"),
                    "data_uri": "data:image/png;base64," + base64.b64encode(data).decode("ascii")})
    return out


def environment() -> dict:
    """auditkit, Python, platform and the numeric libraries the results depend on."""
    env = {"auditkit": __version__, "python": sys.version.split()[0], "implementation": platform.python_implementation(),
           "platform": platform.platform()}
    for mod in ("numpy", "pandas", "scipy", "matplotlib"):
        try:
            env[mod] = __import__(mod).__version__
        except ImportError:
            env[mod] = "not installed"
    return env
