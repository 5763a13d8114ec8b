"""The reviewer's view of a package: `claims` (each claim decided from the raw rows), `report_page`
(the HTML or Markdown report), `review` (every check in one summary) and `explain` (what a finding
code means)."""

from __future__ import annotations

from pathlib import Path

from auditkit.app.checks import add_source_findings
from auditkit.app.outcome import Outcome
from auditkit.app.policy import EvidencePolicy
from auditkit.errors import AuditError


def claims(src, fmt: str, *, claims_path: str | None = None) -> Outcome:
    """Decide every claim of claims.json (or `claims_path`) from the raw rows."""
    from auditkit.report.claims import CLAIMS_FILE, claims_report, evaluate_claims, render_claims

    package = str(src.root)
    results = evaluate_claims(package, claims_path)
    report = add_source_findings(claims_report(results, package, claims_path or CLAIMS_FILE), src)
    lines = []
    if fmt == "json":
        report.info["results"] = [r.to_dict() for r in results]
    elif fmt == "text":
        lines.append(render_claims(results) + "\n")
    return Outcome("claims", report, lines=lines, package=package, claims=results,
                   user_files=[claims_path] if claims_path else ())


def report_page(package: str, out: str, *, page_format: str = "html", claims_path: str | None = None,
                figures: bool = True, force: bool = False, policy: EvidencePolicy = EvidencePolicy()) -> Outcome:
    """Write the reviewer's report of the package to `out` (refused before the work when `out` cannot
    be written): exit 0 when every check holds, 1 when the page shows findings."""
    from auditkit.app.outfile import guard_out_file
    from auditkit.clock import utc_now
    from auditkit.package.writes import write_file
    from auditkit.report.build import build_report
    from auditkit.report.html import render_html
    from auditkit.report.markdown import render_markdown

    guard_out_file(out, package, force=force, name="the report", what="report")   # refused before the work
    data = build_report(package, claims=claims_path, trust=policy.trust(), require=policy.require,
                        figures=figures, generated_at=utc_now())
    text = render_html(data) if page_format == "html" else render_markdown(data)
    write_file(out, text.encode("utf-8"), force=force, what="report")
    bad = [v["check"] for v in data["verdicts"] if v["ok"] is False]
    line = (f"wrote {out}: " + ("every check holds" if not bad else f"findings in {', '.join(bad)}")
            + f"; root {data['root']['computed']}")
    return Outcome("report", lines=[line], exit_code=0 if not bad else 1)


def review(src, *, report_dir: str | None = None, force: bool = False, figures: bool = True,
           policy: EvidencePolicy = EvidencePolicy()) -> Outcome:
    """Verify the package, replay every gate, check its tables and figures, decide its claims: one
    summary (and report.html and review.json in `report_dir`)."""
    if report_dir is not None and src.kind == "directory":
        dest, root = Path(report_dir).resolve(), Path(src.root).resolve()
        if dest == root or root in dest.parents:
            raise AuditError("the report would be written into the package", path=report_dir,
                             hint="write it outside the package: auditkit never writes into what it checks")
    from auditkit.clock import utc_now
    from auditkit.report.review import render_review, review_package, write_review

    data = review_package(src, figures=figures, trust=policy.trust(), require=policy.require, generated_at=utc_now())
    written = write_review(data, report_dir, force=force) if report_dir is not None else []
    return Outcome("review", doc={k: v for k, v in data.items() if k != "figures"}, contract=False,
                   lines=[render_review(data), *(f"wrote {p}" for p in written)], exit_code=data["exit_code"])


def explain(code: str | None) -> Outcome:
    """What finding `code` means and what to do about it; every code, by family, without one.
    AuditError (exit 2, with the nearest codes) for a code the catalogue does not hold."""
    import difflib

    from auditkit.codes import CODES, lookup

    if code is None:
        lines, family = [], None
        for c in CODES:
            if c.family is not family:
                family = c.family
                lines.append(f"\n{family.heading}")
            lines.append(f"  {c.code}")
        lines.append("\nauditkit explain CODE says what one means and what to do (docs/FINDINGS.md lists them all).")
        return Outcome("explain", doc={"ok": True, "exit_code": 0, "codes": [_entry(c) for c in CODES]}, lines=lines)
    entry = lookup(code.strip().lower())
    if entry is None:
        near = difflib.get_close_matches(code, [c.code for c in CODES], n=3, cutoff=0.5)
        raise AuditError(f"no finding code {code!r} in the catalogue",
                         hint=(f"did you mean: {', '.join(near)}? " if near else "")
                         + "auditkit explain (without a code) lists every one")
    lines = [f"{entry.code}  ({entry.family.heading})\n",
             _wrap(entry.meaning, "What it means: "), "", _wrap(entry.action, "What to do:    ")]
    return Outcome("explain", doc={"ok": True, "exit_code": 0, "codes": [_entry(entry)]}, lines=lines)


def _wrap(text: str, first: str) -> str:
    """`text` in lines of at most 88 characters, the first after `first`, the others indented by two."""
    import textwrap

    return textwrap.TextWrapper(width=88, initial_indent=first, subsequent_indent="  ",
                                replace_whitespace=False).fill(text.expandtabs())


def _entry(c) -> dict:
    return {"code": c.code, "family": c.family.value, "meaning": c.meaning, "action": c.action}
