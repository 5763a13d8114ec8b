"""`auditkit review`: the whole review of one package in one call, and its one summary.

verify, replay every gate, the freeze evidence, tables and figures checked, the
claims decided — the checks of `build_report`, run once over the package as
`auditkit.package.source` resolved it.  An archive is also verified as streamed
(its links, special files and duplicate members are findings the snapshot the
other checks read cannot show).  Exit: 1 when any check has findings, else 2
when a check could not run, else 0.
"""

from __future__ import annotations

from pathlib import Path

from auditkit.errors import AuditError

SHOWN_FINDINGS = 10      # per check in the summary; the rest are counted (the report and --json hold them all)


def review_package(src, *, figures: bool = True, trust=None, require=(), generated_at: str | None = None) -> dict:
    """The report data of `build_report` for the resolved package `src` (a `PackageSource`), the
    commands and paths in it named as the user named the package, plus `exit_code`.
    Raises AuditError when the package cannot be read at all."""
    from auditkit.report.build import verdict, build_report

    root = Path(src.root)
    streamed = None
    if src.archive is not None:                     # the archive as streamed, not the snapshot of it
        from auditkit.verify import verify_package

        streamed = verify_package(src.archive)
    data = build_report(root, trust=trust, require=require, figures=figures, generated_at=generated_at,
                        verified=streamed)
    if not figures:
        data["verdicts"] = [v for v in data["verdicts"] if v["check"] != "figures"]
    if src.findings:                                 # what fetching found (a served file that did not match)
        from auditkit.findings import Report

        fetched = Report("fetch", src.given)
        fetched.extend(src.findings)
        data["verdicts"].insert(0, verdict("fetch", "", fetched))
    _name_as_given(data, str(root), src)
    no_claims = not (root / "claims.json").is_file()
    for v in data["verdicts"]:
        v["absent"] = v["check"] == "claims" and v["ok"] is None and no_claims
        v["optional"] = v["check"] == "re-evaluation"   # --deep is asked for by name; its absence is said, not failed
    failed = any(v["ok"] is False for v in data["verdicts"])
    not_run = any(v["ok"] is None and not v["absent"] and not v["optional"] for v in data["verdicts"])
    data["ok"] = not failed and not not_run
    data["exit_code"] = 1 if failed else 2 if not_run else 0
    data["found_at"] = src.found_at
    return data


_COMMANDS = {"fetch": "verify", "verify": "verify", "replay": "replay-gate all", "freeze evidence": "replay-gate all",
             "tables": "tables --check", "figures": "figures --check", "claims": "claims"}


def _name_as_given(data: dict, root: str, src) -> None:
    """Each verdict's command as the user can run it on what they named (not on a snapshot's path)."""
    import shlex

    given = shlex.quote(src.given)
    data["package"] = src.given
    for v in data["verdicts"]:
        v["command"] = f"auditkit {_COMMANDS.get(v['check'], v['check'])} {given}"
        for f in v["findings"]:
            for key in ("path", "message"):
                if isinstance(f.get(key), str):
                    f[key] = f[key].replace(root + "/", "").replace(root, src.given)


def render_review(data: dict) -> str:
    """One summary: a line per check, the findings of each check that has some (at most
    SHOWN_FINDINGS each), and the verdict."""
    where = f" (package found at {data['found_at']})" if data.get("found_at") else ""
    lines = [f"review of {data['package']}{where}"]
    width = max(len(v["check"]) for v in data["verdicts"])
    for v in data["verdicts"]:
        status = "absent" if v.get("absent") else v["status"]
        lines.append(f"  {v['check']:<{width}}  {status:<8} {v['summary']}")
    for v in data["verdicts"]:
        if v["ok"] is False:
            lines.append(f"{v['check']}: {len(v['findings'])} finding(s); all of them: {v['command']}")
            for f in v["findings"][:SHOWN_FINDINGS]:
                where = f["path"] + (f" [{f['location']}]" if f.get("location") else "")
                lines.append(f"  {where}: {f['code']}: {f.get('message', '')}")
            if len(v["findings"]) > SHOWN_FINDINGS:
                lines.append(f"  ... and {len(v['findings']) - SHOWN_FINDINGS} more")
    root = (data.get("root") or {}).get("computed")
    tail = f" (root {root})" if root else ""
    if data["exit_code"] == 0:
        lines.append(f"OK: review {data['package']}: every check holds{tail}")
    elif data["exit_code"] == 1:
        bad = [v["check"] for v in data["verdicts"] if v["ok"] is False]
        lines.append(f"FAILED: review {data['package']}: findings in {', '.join(bad)}{tail}")
    else:
        missing = [v["check"] for v in data["verdicts"]
                   if v["ok"] is None and not v.get("absent") and not v.get("optional")]
        lines.append(f"INCOMPLETE: review {data['package']}: could not check {', '.join(missing)}{tail}")
    return "\n".join(lines)


def write_review(data: dict, dest: str | Path, *, force: bool = False, page: str = "html") -> list[Path]:
    """The reviewer's page (report.html or report.md) and review.json under directory `dest`; AuditError
    when one exists and not `force`. Written atomically; nothing else is touched."""
    import json

    from auditkit.package.atomic import atomic_write_text
    from auditkit.report.html import render_html
    from auditkit.report.markdown import render_markdown

    dest = Path(dest)
    if dest.exists() and not dest.is_dir():
        raise AuditError("not a directory", path=str(dest), hint="--report names a directory to write into")
    name = "report.html" if page == "html" else "report.md"
    paths = [dest / name, dest / "review.json"]
    if not force:
        for p in paths:
            if p.exists():
                raise AuditError("the file exists", path=str(p), hint="choose another --report directory, or --force")
    dest.mkdir(parents=True, exist_ok=True)
    atomic_write_text(paths[0], render_html(data) if page == "html" else render_markdown(data))
    atomic_write_text(paths[1], json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
    return paths
