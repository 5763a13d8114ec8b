"""Evidence that a gate's rules were frozen before its data (package format v1.1, `evidence/`).

- `events`: the append-only, hash-chained event log `evidence/events.jsonl`;
- `tsa`: RFC 3161 timestamps, requested over HTTP, verified offline against
  roots the reviewer trusts;
- `seeds`: run seeds derived from a freeze token, so that data provably
  came after it;
- `attest`: DSSE envelopes carrying in-toto Statement v1 attestations;
- `level`: per gate, the strongest evidence that holds, and the findings
  where evidence contradicts the package.

Layout and formats: docs/SPEC.md, section "v1.1: evidence/".
"""

EVIDENCE_DIR = "evidence"
EVENTS_PATH = "evidence/events.jsonl"
TIMESTAMPS_DIR = "evidence/timestamps"
ATTESTATIONS_DIR = "evidence/attestations"
KEYS_DIR = "evidence/keys"
