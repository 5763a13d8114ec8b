"""Per gate, the strongest evidence that its rules were frozen before its data.

Levels, weakest first (each includes the ones before it):

- `asserted`: the package's own `frozen_at` (SPEC v1; anyone can back-date it);
- `chained`: the event log is intact, records the freeze of exactly these
  rules, and records every row of the gate's input CSVs landing after it (and
  no landed row missing);
- `timestamped`: chained, and a token from a TSA the reviewer trusts covers the
  rules file, made (genTime + accuracy) before the first input row's
  `started_at` and before the first of its row-landed events.

Flags on top: `signed by <key id>` (the decision's attestation verifies under a
trusted key) and `seeds bound to anchor` (every input row's run seed is derived
from a trusted freeze token, `seeds`).

Evidence that contradicts the package is a finding with its own code; evidence
that is merely absent or not trusted lowers the level (and is named in
`untrusted`), and becomes a finding only when the reviewer asks for more with
`require_findings` (`--require LEVEL`). A token or signature that chains only to
roots/keys the reviewer did not name is a finding (`tsa-untrusted`,
`attestation-untrusted-signer`) when the reviewer named some, and nothing of its
kind from a trusted one covers the same subject.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Sequence

from auditkit.clock import format_utc, parse_utc
from auditkit.errors import AuditError
from auditkit.evidence import EVENTS_PATH, EVIDENCE_DIR, KEYS_DIR, TIMESTAMPS_DIR
from auditkit.evidence import attest, seeds as seedmod, tsa
from auditkit.evidence.canonical import row_hash, sha256_hex
from auditkit.evidence.events import Event, decision_findings, order_findings, verify_chain
from auditkit.evidence.model import (CONTENT_ROOT_SUBJECT, EVENT_SUBJECT_PREFIX, PACKAGE_ATTESTATION, EvidenceReport,
                                     GateRef, Level, Trust, asserted_evidence, content_files, content_root,
                                     decision_attestation_path, manifest_content_root)
from auditkit.findings import Finding
from auditkit.package.store import loads_strict


@dataclass
class _Token:
    event: Event
    check: tsa.TokenCheck | None  # None when the token file is missing or changed


# --- the whole package -------------------------------------------------------------

def package_evidence(reader, gates: Sequence[GateRef], trust: Trust | None = None,
                     subject_sha256=None) -> EvidenceReport:
    """Check every piece of evidence in the package and grade each gate. Never raises on bad evidence.

    `subject_sha256(path)`, when given, is the sha256 of a package file as another reader already
    hashed it (verify's scan), or None where that reader has none (the file is then read here); it may
    wait for that reader, so it is asked last: for the package attestation's subjects, after the gates
    (whose findings still come after the attestation's)."""
    trust = trust or Trust()
    log_bytes = reader.read(EVENTS_PATH)
    present = log_bytes is not None or bool(reader.files(EVIDENCE_DIR))
    rep = EvidenceReport(present=present)
    if not present:   # (without a walk over the whole package)
        for g in gates:
            rep.gates[g.gate] = asserted_evidence(g)
        return rep
    files = reader.files()
    events, chain_f = verify_chain(log_bytes) if log_bytes is not None else ([], [])
    rep.findings.extend(chain_f)
    if log_bytes is None:
        rep.notes.append(f"{EVENTS_PATH} is absent: no freeze can be chained")
    for e in events:
        if e.type == "log-repaired":
            rep.notes.append(f"{EVENTS_PATH} line {e.line}: a torn line of {e.get('dropped_bytes')} bytes "
                             "was dropped after a crash")
    for d in reader.unlisted:
        rep.notes.append(f"{d} could not be listed; the files under it are not checked here")
    tokens = _check_tokens(reader, events, trust, rep)
    carried = attest.carried_keys({p: reader.read(p) or b"" for p in files if p.startswith(KEYS_DIR + "/")})
    gates_from = len(rep.findings)
    for g in gates:
        rep.gates[g.gate] = _guarded(rep, g.rules, f"gate {g.gate}", asserted_evidence(g), _gate, reader, g, events,
                                     bool(log_bytes is not None and not chain_f), tokens, trust, carried, rep)
    gate_findings = rep.findings[gates_from:]
    del rep.findings[gates_from:]
    rep.package = _guarded(rep, PACKAGE_ATTESTATION, "", {"attested": True, "signed_by": []},
                           _package_attestation, reader, files, events, trust, carried, rep, subject_sha256)
    rep.findings.extend(gate_findings)
    rep.package["anchored"] = [
        {"time": format_utc(t.check.info.gen_time), "authority": t.check.info.tsa_name,
         "status": t.check.status.value}
        for t in tokens if t.event.get("subject") == CONTENT_ROOT_SUBJECT and t.check is not None
        and t.check.info is not None and t.check.status in (tsa.TokenStatus.TRUSTED, tsa.TokenStatus.UNTRUSTED)]
    rep.package["chain"] = "absent" if log_bytes is None else ("broken" if chain_f else "intact")
    rep.package["events"] = len(events)
    return rep


def _guarded(rep: EvidenceReport, path: str, location: str, default, check, *args):
    """`check(*args)`, or `default` and an `evidence-unchecked` finding at `path` when it fails in a way
    no check foresaw: one piece of evidence auditkit cannot handle must not hide the findings of the
    others (each known defect has a finding of its own; this is the net below them)."""
    try:
        return check(*args)
    except MemoryError:
        raise
    except Exception as exc:  # noqa: BLE001 - see the docstring
        rep.findings.append(Finding(path, "evidence-unchecked", location, "evidence auditkit can check",
                                    f"{type(exc).__name__}: {_short(str(exc))}",
                                    "auditkit could not check this piece of evidence (an input it does not "
                                    "handle: please report it); every other piece was checked"))
        return default


def _short(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _check_tokens(reader, events: Sequence[Event], trust: Trust, rep: EvidenceReport) -> list[_Token]:
    """Check every logged token against the bytes its subject has now."""
    by_seq = {e.seq: e for e in events}
    out: list[_Token] = []
    for e in events:
        if e.type == "timestamped":
            out.append(_guarded(rep, str(e.get("token")), f"{EVENTS_PATH} line {e.line}", _Token(e, None),
                                _check_token, reader, e, by_seq, trust, rep))
    # a subject whose tokens all chain to untrusted roots, when the reviewer named roots
    return _untrusted_subjects(out, trust, rep)


def _check_token(reader, e: Event, by_seq: dict, trust: Trust, rep: EvidenceReport) -> _Token:
    """One logged token, checked against the bytes its subject has now (findings into `rep`)."""
    rel, subject = str(e.get("token")), str(e.get("subject"))
    data = reader.read(rel) if rel.startswith(TIMESTAMPS_DIR + "/") else None
    if data is None:
        rep.findings.append(Finding(rel, "tsa-token-missing", f"{EVENTS_PATH} line {e.line}",
                                    "the token file the log names", "no such file in evidence/timestamps/",
                                    "a recorded timestamp was removed"))
        return _Token(e, None)
    if sha256_hex(data) != e.get("token_sha256"):
        rep.findings.append(Finding(rel, "tsa-token-changed", f"{EVENTS_PATH} line {e.line}",
                                    f"sha256 {e.get('token_sha256')}", f"sha256 {sha256_hex(data)}",
                                    "the token file is not the one the log recorded"))
        return _Token(e, None)
    if subject.startswith(EVENT_SUBJECT_PREFIX):
        seq = subject[len(EVENT_SUBJECT_PREFIX):]
        target = by_seq.get(int(seq)) if seq.isascii() and seq.isdigit() else None
        digest = target.line_sha256 if target is not None else None
    elif subject == CONTENT_ROOT_SUBJECT:
        root = manifest_content_root(reader)
        digest = sha256_hex(root.encode("ascii")) if root else None
    else:
        digest = reader.sha256(subject)
    if digest is None:
        rep.findings.append(Finding(subject, "tsa-subject-missing", f"{EVENTS_PATH} line {e.line}",
                                    "the timestamped file or event line", "absent",
                                    "what this token covered is no longer in the package"))
        return _Token(e, None)
    chain = reader.read(str(e.get("chain", ""))) if e.get("chain") else None
    carried = []
    if chain:
        try:
            from cryptography import x509
            carried = x509.load_pem_x509_certificates(chain)
        except ValueError:
            carried = []
    check = tsa.check_token(data, digest, trust.tsa_roots, carried)
    if check.status is tsa.TokenStatus.OTHER_BYTES:
        rep.findings.append(Finding(subject, "tsa-token-other-bytes", rel, f"a token over sha256 {digest}",
                                    f"a token over sha256 {check.info.imprint_sha256 if check.info else '?'}",
                                    "the timestamped bytes were changed after the token was made"
                                    if subject.startswith(EVENT_SUBJECT_PREFIX) or subject.endswith(".json")
                                    else "the token covers other bytes"))
    elif check.status is tsa.TokenStatus.INVALID:
        rep.findings.append(Finding(rel, "tsa-token-invalid", "", "a valid RFC 3161 token", check.detail,
                                    "the token is damaged or forged"))
    return _Token(e, check)


def _untrusted_subjects(out: list[_Token], trust: Trust, rep: EvidenceReport) -> list[_Token]:
    """`tsa-untrusted` for a subject whose tokens all chain to untrusted roots, when the reviewer named roots."""
    by_subject: dict[str, list[_Token]] = defaultdict(list)
    for t in out:
        by_subject[str(t.event.get("subject"))].append(t)
    for subject, ts in by_subject.items():
        statuses = [t.check.status for t in ts if t.check is not None]
        if trust.tsa_roots and tsa.TokenStatus.UNTRUSTED in statuses and tsa.TokenStatus.TRUSTED not in statuses:
            for t in ts:
                if t.check is not None and t.check.status is tsa.TokenStatus.UNTRUSTED:
                    rep.findings.append(Finding(str(t.event.get("token")), "tsa-untrusted", subject,
                                                "a token chaining to a trusted TSA root", t.check.detail,
                                                "anyone can run a TSA with a made-up clock: "
                                                "this token proves nothing to this reviewer"))
    return out


def _package_attestation(reader, files, events, trust, carried, rep, subject_sha256=None) -> dict:
    data = reader.read(PACKAGE_ATTESTATION)
    if data is None:
        return {"attested": False, "signed_by": []}
    check = _read_envelope(data, PACKAGE_ATTESTATION, attest.PACKAGE_PREDICATE, trust, carried, rep)
    out = {"attested": True, "signed_by": check.signed_by if check else [],
           "untrusted": check.untrusted if check else []}
    if check is None or check.statement is None:
        return out
    subjects = attest.subjects_of(check.statement)
    mismatch = []
    for path, sha in sorted(subjects.items()):
        got = (subject_sha256 and subject_sha256(path)) or reader.sha256(path)
        if got != sha:
            mismatch.append(Finding(path, "attestation-subject-mismatch", PACKAGE_ATTESTATION, f"sha256 {sha}",
                                    "absent" if got is None else f"sha256 {got}",
                                    "the file changed after the package was attested"))
    for path in content_files(files):
        if path not in subjects:
            mismatch.append(Finding(path, "attestation-subject-mismatch", PACKAGE_ATTESTATION,
                                    "a subject of the package attestation", "not attested",
                                    "the file was added after the package was attested"))
    pred = check.statement["predicate"]
    root = content_root(list(subjects.items()))
    if pred.get("root") != root:
        mismatch.append(Finding(PACKAGE_ATTESTATION, "attestation-subject-mismatch", "$.predicate.root",
                                f"{root} (the root of its subjects)", str(pred.get("root")),
                                "the attested root is not that of the attested files"))
    heads = {e.line_sha256 for e in events if e.type == "package-finalized"}
    if pred.get("events_head") not in heads:
        mismatch.append(Finding(EVENTS_PATH, "attestation-subject-mismatch", "$.predicate.events_head",
                                f"a package-finalized line with sha256 {pred.get('events_head')}", "none",
                                "the event log was rewritten after the package was attested"))
    rep.findings.extend(mismatch)
    out["root"] = pred.get("root")
    return out


def _read_envelope(data: bytes, rel: str, predicate_type: str, trust: Trust, carried, rep):
    try:
        doc = loads_strict(data, rel)
    except AuditError as exc:
        rep.findings.append(Finding(rel, "attestation-invalid", "", "a DSSE envelope (JSON)", str(exc), ""))
        return None
    check = attest.check_envelope(doc, trust.keys, carried)
    for keyid in check.bad:
        rep.findings.append(Finding(rel, "attestation-bad-signature", "$.signatures", "a signature that verifies",
                                    f"key {keyid}: it does not verify",
                                    "the attestation was changed after it was signed, or the signature forged"))
    if check.error:
        rep.findings.append(Finding(rel, "attestation-invalid", check.error_at,
                                    "a DSSE envelope with an in-toto Statement v1", check.error, ""))
        return check
    if check.statement is not None and check.statement.get("predicateType") != predicate_type:
        rep.findings.append(Finding(rel, "attestation-invalid", "$.predicateType", predicate_type,
                                    str(check.statement.get("predicateType")), ""))
        check.statement = None
    if trust.keys and not check.signed_by and not check.bad:
        rep.findings.append(Finding(rel, "attestation-untrusted-signer", "$.signatures", "a signature by a trusted key",
                                    "; ".join(check.untrusted) or "none",
                                    "signed only by keys this reviewer does not trust"))
    return check


# --- one gate ------------------------------------------------------------------------

def _gate(reader, g: GateRef, events, chain_ok: bool, tokens: list[_Token], trust: Trust, carried,
          rep: EvidenceReport) -> dict:
    from auditkit.errors import AuditError
    from auditkit.package.rows import read_csv_text

    ev = asserted_evidence(g)
    rules = reader.read(g.rules)
    if rules is None:
        return ev
    rules_sha = sha256_hex(rules)
    rows: list[tuple[str, int, dict]] = []
    hashes: dict[str, list[str]] = {}
    for path in g.inputs:
        body = reader.read(path)
        if body is None:
            continue
        try:
            _, parsed = read_csv_text(body.decode("utf-8"), path)
            hashes[path] = [row_hash(r) for r in parsed]
        except (AuditError, UnicodeDecodeError, ValueError):
            rep.notes.append(f"gate {g.gate}: {path} could not be read as CSV; its rows are not checked here")
            continue
        rows += [(path, i, r) for i, r in enumerate(parsed, 1)]
    starts = [t for t in (parse_utc(r.get("started_at", "")) for _, _, r in rows) if t is not None]
    first_start = min(starts) if starts else None
    ev["first_input_started_at"] = format_utc(first_start) if first_start else None

    gate_f: list[Finding] = []
    records_freezes = any(e.type == "rules-frozen" for e in events)
    if not records_freezes and events:
        rep.notes.append(f"gate {g.gate}: the event log records no freeze (it only anchors the package)")
    if records_freezes:
        gate_f += order_findings(events, g.gate, rules_sha, hashes, g.rules)
        decision = reader.read(g.decision)
        if decision is not None:
            rep.findings.extend(decision_findings(events, g.gate, sha256_hex(decision), g.decision))
    rep.findings.extend(gate_f)
    chained = chain_ok and records_freezes and not gate_f
    input_hashes = {(p, h) for p, hs in hashes.items() for h in hs}
    landed_times = [parse_utc(e.time) for e in events
                    if e.type == "row-landed" and (e.get("path"), e.get("row_sha256")) in input_hashes]
    first_landed = min((t for t in landed_times if t is not None), default=None)

    # tokens over the rules
    trusted_before: list[tsa.TokenInfo] = []
    for t in tokens:
        if t.event.get("subject") != g.rules or t.check is None or t.check.info is None:
            continue
        st = t.check.status
        if st not in (tsa.TokenStatus.TRUSTED, tsa.TokenStatus.UNTRUSTED):
            continue
        info = t.check.info
        late = [(what, when) for what, when in (("the first input row's started_at", first_start),
                                                ("the first input row-landed event", first_landed))
                if when is not None and info.latest_time >= when]
        if late:
            what, when = late[0]
            rep.findings.append(Finding(g.rules, "tsa-token-after-data", str(t.event.get("token")),
                                        f"a token made before {what} ({format_utc(when)})",
                                        f"genTime {format_utc(info.gen_time)}"
                                        + (f" ± {info.accuracy_seconds:g} s" if info.accuracy_seconds else "")
                                        + f" by {info.tsa_name}",
                                        "the rules were timestamped after the data existed"))
            continue
        if st is tsa.TokenStatus.TRUSTED:
            trusted_before.append(info)
        else:
            ev["untrusted"].append(f"timestamp by {info.tsa_name}: {t.check.detail}")
    level = Level.ASSERTED
    if chained:
        level = Level.CHAINED
    if chained and trusted_before:
        level = Level.TIMESTAMPED
        best = min(trusted_before, key=lambda i: i.gen_time)
        ev.update(time=format_utc(best.gen_time), authority=best.tsa_name, accuracy_seconds=best.accuracy_seconds,
                  lead_seconds=round((first_start - best.latest_time).total_seconds(), 6) if first_start else None)
    ev["level"] = level.value

    # the decision's attestation
    env = reader.read(decision_attestation_path(g.gate))
    if env is not None:
        check = _read_envelope(env, decision_attestation_path(g.gate), attest.DECISION_PREDICATE, trust, carried, rep)
        if check is not None:
            ev["untrusted"] += [f"decision signature by key {u}" for u in check.untrusted]
            if check.statement is not None and _decision_statement_holds(reader, g, check.statement, rep):
                ev["signed_by"] = list(check.signed_by)

    # seeds bound to a trusted anchor
    ev["seeds_bound"] = _seeds_bound(g, rows, events, tokens, rep)
    return ev


def _decision_statement_holds(reader, g: GateRef, stmt: dict, rep: EvidenceReport) -> bool:
    rel = decision_attestation_path(g.gate)
    decision = reader.read(g.decision)
    found = []
    subj = attest.subjects_of(stmt)
    if decision is None or subj.get(g.decision) != sha256_hex(decision):
        found.append(Finding(g.decision, "attestation-subject-mismatch", rel,
                             f"sha256 {subj.get(g.decision, '(not a subject)')}",
                             "absent" if decision is None else f"sha256 {sha256_hex(decision)}",
                             "the decision changed after it was attested"))
    pred = stmt["predicate"]
    rules = reader.read(g.rules)
    want_rules = (pred.get("rules") or {}).get("sha256") if isinstance(pred.get("rules"), dict) else None
    if rules is None or want_rules != sha256_hex(rules):
        found.append(Finding(g.rules, "attestation-subject-mismatch", f"{rel} $.predicate.rules",
                             f"sha256 {want_rules}", "absent" if rules is None else f"sha256 {sha256_hex(rules)}",
                             "the rules differ from those the decision was attested with"))
    for ref in pred.get("inputs") or []:
        if not isinstance(ref, dict):
            continue
        body = reader.read(str(ref.get("path")))
        if body is None or sha256_hex(body) != ref.get("sha256"):
            found.append(Finding(str(ref.get("path")), "attestation-subject-mismatch", f"{rel} $.predicate.inputs",
                                 f"sha256 {ref.get('sha256')}", "absent" if body is None else f"sha256 {sha256_hex(body)}",
                                 "the input rows changed after the decision was attested"))
    rep.findings.extend(found)
    return not found


def _seeds_bound(g: GateRef, rows, events, tokens: list[_Token], rep: EvidenceReport) -> bool:
    stages = sorted({r.get("stage", "") for _, _, r in rows})
    if not stages:
        return False
    anchors: dict[str, Event] = {}
    for e in events:
        if e.type == "seeds-anchored" and e.get("stage") not in anchors:
            anchors[e.get("stage")] = e
    by_token = {str(t.event.get("token")): t for t in tokens}
    bound = True
    for stage in stages:
        a = anchors.get(stage)
        if a is None:
            if stage in g.anchored_stages and events:
                rep.findings.append(Finding(EVENTS_PATH, "seed-not-from-anchor", f"stage {stage}",
                                            "a seeds-anchored event (protocol.json anchors the stage's seeds)",
                                            "none", f"stage {stage}'s seeds were to be derived from its freeze "
                                                    "token; the event log names no anchor"))
            bound = False
            continue
        tok = by_token.get(str(a.get("token")))
        if tok is None or tok.event.get("token_sha256") != a.get("token_sha256"):
            rep.findings.append(Finding(EVENTS_PATH, "seed-not-from-anchor", f"line {a.line}",
                                        "an anchor that is a recorded timestamp token", str(a.get("token")),
                                        f"stage {stage}'s seeds name an anchor the log does not hold"))
            bound = False
            continue
        f = seedmod.seed_findings(str(a.get("token_sha256")), stage, rows)
        rep.findings.extend(f)
        if f or tok.check is None or tok.check.status is not tsa.TokenStatus.TRUSTED:
            bound = False
    return bound
