"""Use cases: what each command does, as one function that returns a result value.

A command (`auditkit.cli`) parses its options, builds the values this layer takes (an
`EvidencePolicy`, a request), calls one function here and hands the `Outcome` it returns to
one formatter (`auditkit.cli.output`), then exits once with the outcome's code.  Nothing here
reads click options, picks an output format's syntax, or exits the process: an error that
keeps a check from running is raised as an `AuditError` and translated by the command group.

Layer: above report/, study/ and profile/, below cli/ (docs/ARCHITECTURE.md).

- `outcome`: the `Outcome` value every use case returns;
- `policy`: `EvidencePolicy`, the trust and the requirements a reviewer brings;
- `checks`: verify, replay-gate, decide, manifest build;
- `derived`: tables, figures, counterfactual;
- `review`: claims, report, review, explain;
- `study`: run, protocol run, protocol merge, timestamp;
- `profiled`: the `--profile` ends of verify, replay-gate, tables, and `profile draft`.
"""
