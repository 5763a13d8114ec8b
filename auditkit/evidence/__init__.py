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

MAX_TRUST_FILE_BYTES = 1 << 20   # a PEM key or a CA bundle; a larger "key" is not one


def read_trust_file(path, what: str) -> bytes:
    """The bytes of a file the reviewer names (a key, a root certificate): a regular file of at most
    MAX_TRUST_FILE_BYTES, opened without blocking, so a FIFO or a device named by mistake is refused
    at once instead of hanging the command. Raises AuditError naming the file."""
    import os
    import stat

    from auditkit.errors import AuditError

    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise AuditError(f"cannot read the {what}: {exc.strerror or exc}", path=str(path)) from None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise AuditError(f"the {what} is not a regular file (a FIFO, a device or a directory?)", path=str(path),
                             hint=f"give the {what} as a PEM file")
        data = f.read(MAX_TRUST_FILE_BYTES + 1)
    if len(data) > MAX_TRUST_FILE_BYTES:
        raise AuditError(f"the {what} is larger than {MAX_TRUST_FILE_BYTES} bytes; not a PEM file", path=str(path))
    return data
