"""Evidence that a gate's rules were frozen before its data (package format v1.1, `evidence/`).

- `events`: the append-only, hash-chained event log `evidence/events.jsonl`;
- `tsa`: RFC 3161 timestamps, requested over HTTP, verified offline against
  roots the reviewer trusts;
- `seeds`: run seeds derived from a freeze token, so that data provably
  came after it;
- `attest`: DSSE envelopes carrying in-toto Statement v1 attestations;
- `level`: per gate, the strongest evidence that holds, and the findings
  where evidence contradicts the package; `model` holds the values it works
  with (levels, gate references, trust, the report, the package reader),
  `require` what the reviewer demands (`--require`) and the one-line summary;
- `record` writes the evidence as a study runs, `report` grades a package.

Layout and formats: docs/SPEC.md, section "v1.1: evidence/".
"""

EVIDENCE_DIR = "evidence"
EVENTS_PATH = "evidence/events.jsonl"
TIMESTAMPS_DIR = "evidence/timestamps"
ATTESTATIONS_DIR = "evidence/attestations"
KEYS_DIR = "evidence/keys"

MAX_TRUST_FILE_BYTES = 1 << 20   # a PEM key or a CA bundle; a larger "key" is not one


def read_trust_file(path, what: str) -> bytes:
    """The bytes of a key or root certificate file the reviewer names (`userfiles.read_user_file`):
    a regular file of at most MAX_TRUST_FILE_BYTES; a FIFO or device is refused, never waited on."""
    from auditkit.userfiles import read_user_file

    return read_user_file(path, what, MAX_TRUST_FILE_BYTES, hint=f"give the {what} as a PEM file")
