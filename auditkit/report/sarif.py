"""SARIF 2.1.0 from auditkit reports, in the shape GitHub code scanning reads.

`sarif_log(reports, package_dir=..., root=...)` makes one run per `Report` (verify,
replay-gate, tables --check, claims ...), all with the tool `auditkit` and each its own
`automationDetails.id` (GitHub keeps several runs of one tool apart by that category).

- Every rule carries the finding-code catalogue's text (`auditkit.codes`): what the code
  means as its description, and meaning plus what to do as `help.text`.
- Every result has a physical location with a region: a CSV cell (``row 3, column val_bpb``)
  is its line and the cell's column span, a JSON path (``$.inputs[2].sha256``) the line and
  columns of that value, ``line N`` that line, ``byte N`` that byte's line and column.  A
  finding about a file the repository does not hold (a missing file, a name outside the
  package such as ``../x`` or ``/etc/passwd`` from an attestation subject) is placed where
  the package lists that name (MANIFEST.json, protocol.json ...), else at protocol.json's
  first line, and names the file in its message: no URI ever points outside the package.
- URIs are relative to the repository root (`%SRCROOT%`): `root` when given (`--sarif-root`),
  else the top of the git checkout that holds the package, else the package itself.  A
  package path is percent-encoded from its bytes, so a file name that is not UTF-8 stays
  exact.
- `partialFingerprints.primaryLocationLineHash` is a hash of the rule and the located
  line's text (with an occurrence count), so an alert survives lines moving in the file.
- Every file is read through the package store (no-follow, regular files only, size caps).

`error_log(command, error)` is the document of a command that could not check (exit 2):
one run with `executionSuccessful: false` and the reason as a `toolExecutionNotification`.
The output is validated against the OASIS SARIF 2.1.0 schema in the tests.
"""


from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Iterable, Sequence

from auditkit import __version__
from auditkit.errors import AuditError
from auditkit.findings import Finding, Report
from auditkit.report.sarif_places import Places, deep_clean

SARIF_SCHEMA = "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json"
SRCROOT = "%SRCROOT%"


# --- the document --------------------------------------------------------------------------------

def sarif_log(reports: Sequence[Report], *, package_dir: str | Path | None = None,
              root: str | Path | None = None, user_files: Iterable[str] = ()) -> dict:
    """The SARIF 2.1.0 log (a JSON-ready dict) of `reports`.  `package_dir` is the package (a
    directory, or an archive whose findings are placed at the archive); `root` the directory URIs
    are relative to (AuditError when the package is not inside it); `user_files` files the user
    named on the command line (`--claims FILE`) that may lie outside the package."""
    places = Places(package_dir, root, user_files)
    try:
        return {"$schema": SARIF_SCHEMA, "version": "2.1.0",
                "runs": [deep_clean(_run(r, places)) for r in reports]}
    finally:
        places.close()


def sarif_text(reports: Sequence[Report], **kwargs) -> str:
    return dump(sarif_log(reports, **kwargs))


def dump(log: dict) -> str:
    return json.dumps(log, indent=2, ensure_ascii=False) + "\n"


def _driver(rules: list | None = None) -> dict:
    return {"name": "auditkit", "version": __version__, "semanticVersion": __version__, "rules": rules or []}


def error_log(command: str, error: AuditError, *, command_line: str = "") -> dict:
    """The log of a command that could not check (exit 2): no results, the invocation unsuccessful,
    and what failed (with the hint) as its notification."""
    text = error.message + (f" (hint: {error.hint})" if error.hint else "")
    note: dict = {"level": "error", "message": {"text": text}, "descriptor": {"id": "could-not-check"}}
    if error.path:
        note["properties"] = {"path": error.path}
    run = {"tool": {"driver": _driver()}, "automationDetails": {"id": f"auditkit/{command.split()[0]}/"},
           "invocations": [{"executionSuccessful": False, "exitCode": 2,
                            "commandLine": command_line or f"auditkit {command}",
                            "toolExecutionNotifications": [note]}],
           "results": [], "columnKind": "unicodeCodePoints"}
    return {"$schema": SARIF_SCHEMA, "version": "2.1.0", "runs": [deep_clean(run)]}


def _rule(code: str, fallback: str) -> dict:
    from auditkit.codes import lookup

    entry = lookup(code)
    meaning = entry.meaning if entry else (fallback or code.replace("-", " "))
    action = entry.action if entry else "See docs/FINDINGS.md."
    short = re.split(r"(?<=[.!?])\s", meaning, maxsplit=1)[0]
    rule = {"id": code, "name": "".join(w.capitalize() for w in code.split("-")),
            "shortDescription": {"text": short}, "fullDescription": {"text": meaning},
            "help": {"text": f"{meaning}\n\nWhat to do: {action}",
                     "markdown": f"{meaning}\n\n**What to do:** {action}\n\n(`auditkit explain {code}`)"},
            "defaultConfiguration": {"level": "error"}}
    if entry:
        rule["properties"] = {"tags": [entry.family.value]}
    return rule


def _run(report: Report, places: "Places") -> dict:
    findings = report.sorted_findings()
    codes = sorted({f.code for f in findings})
    first: dict[str, Finding] = {}
    for f in findings:
        first.setdefault(f.code, f)
    seen: dict[str, int] = {}
    results = []
    for f in findings:
        res = _result(f, codes.index(f.code), places)
        h = res["partialFingerprints"]["primaryLocationLineHash"]
        if ":" not in h:   # not GitHub's hash of a file line: our own, numbered the same way
            seen[h] = seen.get(h, 0) + 1
            res["partialFingerprints"]["primaryLocationLineHash"] = f"{h}:{seen[h]}"
        results.append(res)
    run = {
        "tool": {"driver": _driver([_rule(c, first[c].message) for c in codes])},
        "automationDetails": {"id": f"auditkit/{report.command.split()[0]}/"},
        "invocations": [{"executionSuccessful": True, "exitCode": report.exit_code,
                         "commandLine": f"auditkit {report.command} {report.target}",
                         "properties": {"checked": dict(report.checked),
                                        "info": {k: str(v) for k, v in report.info.items()}}}],
        "results": results,
        "columnKind": "unicodeCodePoints",
    }
    if places.root is not None:
        run["originalUriBaseIds"] = {SRCROOT: {"uri": places.root.as_uri() + "/"}}
    return run


def _result(f: Finding, rule_index: int, places: "Places") -> dict:
    text = f.message or f.code.replace("-", " ")
    detail = f.detail()
    if detail:
        text += f" ({'; '.join(detail)})"
    uri, region, line_text, moved, line_hash = places.locate(f)
    if moved:
        text = f"{f.path or 'the package'}: {text}"
    if f.location:
        text += f" [at {f.location}]"
    res: dict = {"ruleId": f.code, "ruleIndex": rule_index, "level": "error", "message": {"text": text},
                 "partialFingerprints": {
                     "primaryLocationLineHash": line_hash or hashlib.sha256(
                         f"{f.code}\0{' '.join(line_text.split()) or (f.path + chr(0) + f.location)}"
                         .encode("utf-8", "surrogatepass")).hexdigest()[:16],
                     "auditkitFinding/v1": hashlib.sha256(
                         f"{f.code}|{f.path}|{f.location}".encode("utf-8", "surrogatepass")).hexdigest()},
                 "properties": {k: v for k, v in f.to_dict().items() if k not in ("code", "message", "hint")}}
    loc: dict = {}
    if uri is not None:
        loc["physicalLocation"] = {"artifactLocation": {"uri": uri, "uriBaseId": SRCROOT}, "region": region}
    if f.location.startswith("$"):
        last = f.location.rsplit(".", 1)[-1]
        loc["logicalLocations"] = [{"fullyQualifiedName": f.location,
                                    "kind": "element" if last.endswith("]") else "property"}]
    if loc:
        res["locations"] = [loc]
    return res
