"""SARIF 2.1.0 from auditkit reports: each finding a result, for code-scanning UIs and CI.

`sarif_log(reports, package_dir=None)` makes one run per `Report` (verify,
replay-gate, tables --check, claims ...), all with the tool `auditkit` and each its
own `automationDetails.id` (GitHub accepts several runs of one tool only with
distinct categories). A finding becomes a result with

- `ruleId` its code (the run's `tool.driver.rules` lists every code once);
- the file as `physicalLocation.artifactLocation` (relative to `PKGROOT`, the
  package directory, in `originalUriBaseIds` when it is given);
- a CSV row (``row 3, column val_bpb``) as a `region`: ``startLine`` is the row's line
  (the header is line 1), and the column's character span when the package is at hand
  and the line holds no quoted field; ``line N`` (a table difference) as that line;
- a JSON path (``$.candidates[0].rank``) as a `logicalLocation`;
- expected and found as `properties`, and a stable `partialFingerprints` entry.

The output is validated against the official SARIF 2.1.0 JSON Schema in the tests.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Sequence
from urllib.parse import quote

from auditkit import __version__
from auditkit.findings import Finding, Report

SARIF_SCHEMA = "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json"
_ROW = re.compile(r"^row (\d+)(?:, column (.+))?$")
_LINE = re.compile(r"^line (\d+)$")


def sarif_log(reports: Sequence[Report], *, package_dir: str | Path | None = None) -> dict:
    """The SARIF 2.1.0 log (a JSON-ready dict) of `reports`."""
    pkg = Path(package_dir).resolve() if package_dir is not None else None
    return {"$schema": SARIF_SCHEMA, "version": "2.1.0", "runs": [_run(r, pkg) for r in reports]}


def sarif_text(reports: Sequence[Report], *, package_dir: str | Path | None = None) -> str:
    return json.dumps(sarif_log(reports, package_dir=package_dir), indent=2, ensure_ascii=False) + "\n"


def _run(report: Report, pkg: Path | None) -> dict:
    findings = report.sorted_findings()
    codes = sorted({f.code for f in findings})
    first = {}
    for f in findings:
        first.setdefault(f.code, f)
    rules = [{"id": c, "name": "".join(w.capitalize() for w in c.split("-")),
              "shortDescription": {"text": c.replace("-", " ")},
              "fullDescription": {"text": first[c].message or c.replace("-", " ")},
              "defaultConfiguration": {"level": "error"}} for c in codes]
    lines: dict[str, list[str] | None] = {}
    run = {
        "tool": {"driver": {"name": "auditkit", "version": __version__, "semanticVersion": __version__,
                            "rules": rules}},
        "automationDetails": {"id": f"auditkit/{report.command.split()[0]}/"},
        "invocations": [{"executionSuccessful": True, "exitCode": report.exit_code,
                         "commandLine": f"auditkit {report.command} {report.target}",
                         "properties": {"checked": dict(report.checked),
                                        "info": {k: str(v) for k, v in report.info.items()}}}],
        "results": [_result(f, codes.index(f.code), pkg, lines) for f in findings],
        "columnKind": "unicodeCodePoints",
    }
    if pkg is not None:
        run["originalUriBaseIds"] = {"PKGROOT": {"uri": pkg.as_uri() + "/"}}
    return run


def _result(f: Finding, rule_index: int, pkg: Path | None, cache: dict) -> dict:
    text = f.message or f.code.replace("-", " ")
    detail = [x for x in (f"expected {f.expected}" if f.expected else "", f"found {f.found}" if f.found else "") if x]
    if detail:
        text += f" ({'; '.join(detail)})"
    res: dict = {"ruleId": f.code, "ruleIndex": rule_index, "level": "error", "message": {"text": text},
                 "partialFingerprints": {"auditkitFinding/v1": hashlib.sha256(
                     f"{f.code}|{f.path}|{f.location}".encode()).hexdigest()},
                 "properties": {"expected": f.expected, "found": f.found, "location": f.location}}
    loc: dict = {}
    if f.path:
        phys: dict = {"artifactLocation": {"uri": quote(f.path), "uriBaseId": "PKGROOT"}}
        region = _region(f, pkg, cache)
        if region:
            phys["region"] = region
        loc["physicalLocation"] = phys
    if f.location.startswith("$"):
        last = f.location.rsplit(".", 1)[-1]
        loc["logicalLocations"] = [{"fullyQualifiedName": f.location,
                                    "kind": "element" if last.endswith("]") else "property"}]
    if loc:
        res["locations"] = [loc]
    return res


def _region(f: Finding, pkg: Path | None, cache: dict) -> dict | None:
    m = _LINE.match(f.location)
    if m:
        return {"startLine": int(m[1])}
    m = _ROW.match(f.location)
    if not m:
        return None
    line = int(m[1]) + 1   # data row N is line N + 1 (the header is line 1)
    region = {"startLine": line}
    if m[2] and pkg is not None:
        span = _column_span(pkg, f.path, line, m[2], cache)
        if span:
            region["startColumn"], region["endColumn"] = span
    return region


def _column_span(pkg: Path, rel: str, line: int, column: str, cache: dict) -> tuple[int, int] | None:
    """1-based [start, end) character columns of `column` on `line` of a CSV file, when its header
    and that line hold no quoted field (else None: the row alone is reported)."""
    if rel not in cache:
        try:
            cache[rel] = (pkg / rel).read_text("utf-8").split("\n")
        except (OSError, UnicodeDecodeError):
            cache[rel] = None
    lines = cache[rel]
    if not lines or line > len(lines) or '"' in lines[0] or '"' in lines[line - 1]:
        return None
    header = lines[0].split(",")
    if column not in header:
        return None
    cells = lines[line - 1].split(",")
    i = header.index(column)
    if i >= len(cells):
        return None
    start = sum(len(c) + 1 for c in cells[:i]) + 1
    return start, start + max(len(cells[i]), 0)
