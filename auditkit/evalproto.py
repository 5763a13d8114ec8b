"""Were all inputs of a gate scored alike?  (issue 14)

A gate compares candidates by val_bpb, which is only fair when every input row
was measured on the same evaluation: the same scored tokens (`eval_sha256`),
the same context length (`eval_seq_len`) and the same tokenizer.  Run rows of
format v1.1 carry these as optional columns (SPEC section 4); rows without
them (v1.0 packages) cannot be checked, and a gate whose rows all lack them
gets no finding.

`gate_eval_findings` is pure: rows in, findings out.
"""

from __future__ import annotations

from collections import Counter
from typing import Callable

from auditkit.findings import Finding

PROTOCOL_COLUMNS = ("eval_sha256", "eval_seq_len", "tokenizer")


def _protocol(row: dict) -> tuple[str, ...]:
    return tuple((row.get(c) or "").strip() for c in PROTOCOL_COLUMNS)


def _describe(key: tuple[str, ...]) -> str:
    return ", ".join(f"{c}={v[:16] if c == 'eval_sha256' else v or '(empty)'}" for c, v in zip(PROTOCOL_COLUMNS, key))


def gate_eval_findings(gate: str, rows: list[dict], path_of_row: Callable[[dict], str]) -> list[Finding]:
    """Findings for the input rows of `gate` that were not evaluated like the others.

    `rows` are the gate's input run rows (dicts of strings, as read from the CSV);
    only rows with a metric (status ok) are compared.  `path_of_row(row)` names
    the package file a row comes from.  Codes: `eval-protocol-mismatch` for a row
    scored on other tokens, context or tokenizer than most of the gate's rows;
    `eval-protocol-unrecorded` for a row without the columns when others have them.
    """
    scored = [r for r in rows if (r.get("status") or "") == "ok" and (r.get("val_bpb") or "").strip()]
    recorded = [r for r in scored if any(_protocol(r))]
    if not recorded:
        return []  # a v1.0 package: nothing to compare
    counts = Counter(_protocol(r) for r in recorded)
    # the protocol most rows share is the reference; ties go to the first in sorted order
    reference = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[0][0]
    findings = []
    for r in scored:
        where = f"gate {gate}, row {r.get('run_id', '?')}"
        key = _protocol(r)
        if not any(key):
            findings.append(Finding(path_of_row(r), "eval-protocol-unrecorded", where, _describe(reference),
                                    "no eval_sha256, eval_seq_len or tokenizer",
                                    f"the other inputs of gate {gate} record how they were evaluated and this one "
                                    "does not, so its val_bpb cannot be shown to be comparable"))
        elif key != reference:
            differ = [c for c, a, b in zip(PROTOCOL_COLUMNS, key, reference) if a != b]
            findings.append(Finding(path_of_row(r), "eval-protocol-mismatch", f"{where}, column {differ[0]}",
                                    _describe(reference), _describe(key),
                                    f"gate {gate} compares val_bpb measured on different evaluations "
                                    f"({', '.join(differ)} differ from {counts[reference]} of its "
                                    f"{len(recorded)} rows): the val_bpb values it ranks are not comparable"))
    return sorted(findings)
