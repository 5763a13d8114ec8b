"""Were the inputs of each gate scored alike?  (SPEC v1.1 evaluation columns)

A gate compares candidates' val_bpb; that comparison means something only when every
input row was evaluated on the same tokens, with the same context and tokenizer.  Rows
that record how they were evaluated (`eval_sha256`, `eval_seq_len`, `tokenizer`, ...)
are compared within each gate (`auditkit.evalproto`); a v1.0 package without those
columns has nothing to compare and passes.
"""

from __future__ import annotations

from typing import Iterator

from auditkit.evalproto import gate_eval_findings
from auditkit.findings import Finding
from auditkit.verify.view import PackageView


def check(view: PackageView) -> Iterator[Finding]:
    gates = view.protocol.get("gates")
    if not isinstance(gates, list):
        return
    by_stage: dict[str, list[tuple[str, dict]]] = {}
    for _rid, (rel, _i, row) in view.runs.items():
        by_stage.setdefault(row.get("stage", ""), []).append((rel, row))
    for g in gates:
        if not isinstance(g, dict) or not isinstance(g.get("rules"), str):
            continue
        rules = view.json(g["rules"])
        inputs = rules.get("inputs") if isinstance(rules, dict) else None
        if not isinstance(inputs, dict):
            continue  # the rules' own findings say why
        stages = inputs.get("stages") if isinstance(inputs.get("stages"), list) else []
        hosts = {str(h) for h in inputs.get("hosts", [])} if isinstance(inputs.get("hosts"), list) else None
        seeds = {str(s) for s in inputs.get("seeds", [])} if isinstance(inputs.get("seeds"), list) else None
        picked = [(rel, r) for st in stages if isinstance(st, str) for rel, r in by_stage.get(st, [])
                  if (hosts is None or r.get("host") in hosts) and (seeds is None or r.get("seed") in seeds)]
        where = {id(r): rel for rel, r in picked}
        yield from gate_eval_findings(str(g.get("gate", "?")), [r for _, r in picked], lambda r: where[id(r)])
