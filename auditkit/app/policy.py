"""`EvidencePolicy`: what a reviewer trusts and demands of a package's freeze evidence, as a value.

The command line maps `--trusted-tsa`, `--trusted-key`, `--system-trust` and `--require` to one
`EvidencePolicy` and passes it into the use cases (as sigstore-python maps its flags to a
verifier and a policy).  The trust anchors are named files; they are read when the evidence is
graded (`trust()`), so an unreadable anchor is reported where the evidence is checked.
"""

from __future__ import annotations

from dataclasses import dataclass

# What `--require` may demand of every gate: auditkit.evidence.level.REQUIREMENTS (a test keeps the
# two equal; this copy keeps the evidence code, and its cryptography, out of every command's start).
REQUIREMENTS = ("asserted", "chained", "timestamped", "signed", "seeds-bound")


@dataclass(frozen=True)
class EvidencePolicy:
    """Root CAs of the TSAs trusted (`tsa_roots`), public keys whose attestations are trusted
    (`keys`), whether the system's CA store is trusted too, and the evidence every gate must have."""

    tsa_roots: tuple[str, ...] = ()
    keys: tuple[str, ...] = ()
    system_trust: bool = False
    require: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        unknown = [r for r in self.require if r not in REQUIREMENTS]
        if unknown:
            raise ValueError(f"unknown requirement(s) {', '.join(unknown)}: one of {', '.join(REQUIREMENTS)}")

    @property
    def trusts_anything(self) -> bool:
        """Whether a trust anchor was given (they do not apply to a package read through a profile)."""
        return bool(self.tsa_roots or self.keys or self.system_trust)

    def trust(self):
        """The `auditkit.evidence.level.Trust` these anchors make (reads the PEM files)."""
        from auditkit.evidence.model import Trust

        return Trust.from_files(list(self.tsa_roots), list(self.keys), system_store=self.system_trust)


def add_evidence(report, package: str, gates, policy: EvidencePolicy, *, text: bool, subject_sha256=None) -> None:
    """Grade the gates' freeze evidence (`gates` None: every gate) into `report` under `policy`;
    for every format but JSON (`text`), as one readable line a gate. `subject_sha256`: see
    `evidence.level.package_evidence`."""
    from auditkit.evidence.report import add_freeze_evidence, render_freeze_evidence

    add_freeze_evidence(report, package, gates, policy.trust(), list(policy.require), subject_sha256=subject_sha256)
    if text:
        render_freeze_evidence(report)
