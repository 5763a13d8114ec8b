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
    for gate, picked in view.gate_inputs:
        where = {id(r): rel for rel, r in picked}
        yield from gate_eval_findings(gate, [r for _, r in picked], lambda r: where[id(r)])
