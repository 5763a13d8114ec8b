"""JUnit XML from auditkit results: one test case per check, claim and gate.

`junit_xml(reports=..., replays=..., claims=...)` writes one `<testsuite>` per source:

- a `Report` (verify, tables --check ...): a case per finding code (failed, every finding
  of that code in its text) and one case for the whole command (failed when anything was
  found) — a clean run is one passing case;
- replayed gates (`replay.GateReplay`): a case per gate (failed when the replay differs
  from the record) and a case per frozen check, named with its outcome; a check that
  FAILs is a recorded outcome of the study, not a failure of the audit, so the case
  fails only when the recorded and replayed outcomes differ;
- claims (`ClaimResult`): a case per claim: held passes, not held fails, not checkable is
  an error.

`error_xml(command, error)` is the document of a command that could not check (exit 2): one
suite with one case holding an `<error>`.  Every text is made fit for XML 1.0 first: a control
character (from a file name, a CSV cell or a claim) is written as ``\\xNN`` and a lone surrogate
as U+FFFD, so the document is always well formed.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from typing import Sequence

from auditkit.errors import AuditError
from auditkit.findings import Report

# what XML 1.0 does not allow in a document (tab, newline and carriage return are allowed)
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def xml_text(text: str) -> str:
    """`text` fit for XML 1.0: control characters as ``\\xNN``, lone surrogates as U+FFFD."""
    return _NOT_XML.sub(lambda m: "\ufffd" if "\ud800" <= m[0] <= "\udfff" else f"\\x{ord(m[0]):02x}"
                        if ord(m[0]) < 0x100 else f"\\u{ord(m[0]):04x}", str(text))


def _clean_tree(root: ET.Element) -> None:
    for el in root.iter():
        if el.text:
            el.text = xml_text(el.text)
        for k, v in el.attrib.items():
            el.set(k, xml_text(v))


def _document(root: ET.Element) -> str:
    _clean_tree(root)
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def error_xml(command: str, error: AuditError) -> str:
    """The JUnit document of a command that could not check: one case, an `<error>`."""
    root = ET.Element("testsuites", name="auditkit", tests="1", failures="0", errors="1")
    suite = _suite(root, f"auditkit {command}")
    text = error.diagnostics()
    case = ET.SubElement(suite, "testcase", classname=command.split()[0], name=f"auditkit {command}")
    ET.SubElement(case, "error", message=error.message, type="could-not-check").text = text
    suite.set("tests", "1")
    suite.set("errors", "1")
    return _document(root)


def junit_xml(*, reports: Sequence[Report] = (), replays: Sequence = (), claims: Sequence = (),
              name: str = "auditkit") -> str:
    """The JUnit XML document (UTF-8 text with an XML declaration)."""
    root = ET.Element("testsuites", name=name)
    for rep in reports:
        _report_suite(root, rep)
    if replays:
        _replay_suite(root, replays)
    if claims:
        _claims_suite(root, claims)
    tests = failures = errors = 0
    for s in root:
        tests += int(s.get("tests"))
        failures += int(s.get("failures"))
        errors += int(s.get("errors"))
    root.set("tests", str(tests))
    root.set("failures", str(failures))
    root.set("errors", str(errors))
    return _document(root)


def _suite(root: ET.Element, name: str) -> ET.Element:
    return ET.SubElement(root, "testsuite", name=name, tests="0", failures="0", errors="0", skipped="0")


def _case(suite: ET.Element, classname: str, name: str, *, failure: str | None = None, error: str | None = None,
          text: str = "", out: str = "") -> None:
    case = ET.SubElement(suite, "testcase", classname=classname, name=name)
    if failure is not None:
        ET.SubElement(case, "failure", message=failure, type="finding").text = text or failure
        suite.set("failures", str(int(suite.get("failures")) + 1))
    elif error is not None:
        ET.SubElement(case, "error", message=error, type="claim-not-checkable").text = text or error
        suite.set("errors", str(int(suite.get("errors")) + 1))
    if out:
        ET.SubElement(case, "system-out").text = out
    suite.set("tests", str(int(suite.get("tests")) + 1))


def _report_suite(root: ET.Element, rep: Report) -> None:
    cls = rep.command.split()[0]
    suite = _suite(root, f"{rep.command} {rep.target}")
    by_code: dict[str, list] = {}
    for f in rep.sorted_findings():
        by_code.setdefault(f.code, []).append(f)
    for code, fs in by_code.items():
        _case(suite, cls, code, failure=f"{len(fs)} finding(s): {fs[0]}", text="\n".join(str(f) for f in fs))
    checked = ", ".join(f"{n} {k}" for k, n in rep.checked.items())
    summary = "\n".join(f"{k}: {v}" for k, v in rep.info.items())
    _case(suite, cls, f"{rep.command} {rep.target}",
          failure=None if rep.ok else f"{len(rep.findings)} finding(s)" + (f" ({checked})" if checked else ""),
          text=rep.render_text(), out=summary + (f"\nchecked: {checked}" if checked else ""))


def _replay_suite(root: ET.Element, replays: Sequence) -> None:
    suite = _suite(root, "replay-gate")
    for r in replays:
        _case(suite, f"replay-gate.{r.gate}", f"gate {r.gate} replays to its recorded decision",
              failure=None if r.identical else f"{len(r.findings)} difference(s)",
              text="\n".join(str(f) for f in r.findings))
        rec = (r.recorded_doc() or {}).get("checks") or []
        rep = (r.replayed_doc() or {}).get("checks") or []
        for i, ch in enumerate(rep or rec):
            ref = f" vs {ch['reference']}" if ch.get("reference") else ""
            outcome = "PASS" if ch.get("passed") else "FAIL"
            got = rec[i] if i < len(rec) else None
            same = got is not None and bool(got.get("passed")) == bool(ch.get("passed"))
            value = ch.get("value")
            recorded = "-" if got is None else ("PASS" if got.get("passed") else "FAIL")
            out = (f"replayed {outcome} (value {value}, threshold {ch.get('threshold')}); recorded {recorded}"
                   "; a check that FAILs is an outcome the study recorded, not a problem of the audit")
            # named for both outcomes: a case that passes is never named "-> FAIL"
            _case(suite, f"replay-gate.{r.gate}",
                  f"check {ch['kind']} {ch['candidate']}{ref}: recorded {recorded}, replayed {outcome}",
                  failure=None if same or not rep else "the recorded outcome is not what the raw rows give",
                  text=out, out=out)


def _claims_suite(root: ET.Element, claims: Sequence) -> None:
    from auditkit.report.claims import ClaimOutcome

    suite = _suite(root, "claims")
    for c in claims:
        body = (f"{c.statement}\nclaims: {c.expected}\nfound: {c.found or '-'}\nevidence: {c.evidence or '-'}"
                f"\ncommand: {c.command}")
        if c.outcome is ClaimOutcome.HELD:
            _case(suite, "claims", c.id, out=body)
        elif c.outcome is ClaimOutcome.NOT_HELD:
            _case(suite, "claims", c.id, failure=f"does not hold: {c.expected}; found {c.found}", text=body)
        else:
            _case(suite, "claims", c.id, error=f"not checkable: {c.why}", text=body + f"\nwhy: {c.why}")
