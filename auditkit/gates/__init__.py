"""auditkit.gates: the one gate pipeline, rules -> rows -> candidates (the ``promoted-by:`` chain)
-> decide -> compare with the recorded decision.

- `rules`: the rules' vocabulary and `validate_rules`; `engine`: the pure decision.
- `chain`: the one ``promoted-by:`` parser and candidate resolver, the walk over gates, the one
  cycle check.
- `documents`: protocol, JSON documents, matrix and inputs, read through the store; the decision
  schema. `pipeline`: the declared source (`StoreSource`), row selection, engine columns, decide.
- `recorded`: the recorded decision (canonical-form fast path); `diff`: the one decision diff.
- `replay` (replay-gate, decide), `outcomes` (every gate from the raw rows: report, claims,
  robustness); `render` and `reasons`: text.
"""
