"""The values freeze-evidence grading works with, and how it reads a package directory.

`Level` and `REQUIREMENTS` (what `--require` accepts), `GateRef` (a gate as the package names
it), `Trust` (what the reviewer trusts), `EvidenceReport` (what grading found), the subjects and
paths of the evidence files, the content root (SPEC section 9), and `DirReader`, the package
directory read through the store and listed by `package.listing.list_entries`.
"""

from __future__ import annotations

import enum
import errno
import hashlib
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from auditkit.errors import AuditError
from auditkit.evidence import ATTESTATIONS_DIR, EVENTS_PATH, EVIDENCE_DIR, attest, tsa
from auditkit.evidence.events import path_problem
from auditkit.findings import Finding
from auditkit.package.listing import list_entries
from auditkit.package.store import loads_strict

EVENT_SUBJECT_PREFIX = f"{EVENTS_PATH}#"
CONTENT_ROOT_SUBJECT = "content-root"  # a token over the ASCII hex content root (`auditkit timestamp`)
MANIFEST_FILES = ("MANIFEST.json", "MANIFEST.csv")
PACKAGE_ATTESTATION = f"{ATTESTATIONS_DIR}/package.dsse.json"


def decision_attestation_path(gate: str) -> str:
    return f"{ATTESTATIONS_DIR}/{gate}.decision.dsse.json"


class Level(str, enum.Enum):
    ASSERTED = "asserted"
    CHAINED = "chained"
    TIMESTAMPED = "timestamped"

    @property
    def rank(self) -> int:
        return list(Level).index(self)


#: what `--require` accepts: a level, or a flag
REQUIREMENTS = ("asserted", "chained", "timestamped", "signed", "seeds-bound")


@dataclass(frozen=True)
class GateRef:
    """A gate as the package names it: its rules, its decision and its input CSVs (package paths)."""

    gate: str
    rules: str
    decision: str
    inputs: tuple[str, ...]
    frozen_at: str = ""
    anchored_stages: tuple[str, ...] = ()  # input stages protocol.json declares `rng_seeds: "anchored"`


@dataclass
class Trust:
    """What the reviewer trusts: TSA root certificates and public keys (`keys.PublicKey`)."""

    tsa_roots: list = field(default_factory=list)
    keys: list = field(default_factory=list)

    @classmethod
    def from_files(cls, tsa_pems: Sequence[str | Path] = (), key_pems: Sequence[str | Path] = (),
                   system_store: bool = False) -> "Trust":
        roots = tsa.load_certificates(tsa_pems) + (tsa.system_roots() if system_store else [])
        return cls(roots, [attest.load_public_key(p) for p in key_pems])


@dataclass
class EvidenceReport:
    present: bool
    gates: dict[str, dict] = field(default_factory=dict)   # freeze_evidence per gate
    package: dict = field(default_factory=dict)            # package attestation, log state
    findings: list[Finding] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


class DirReader:
    """Read a package directory: `read(rel)` (None when absent) and `files()`."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self._store = None
        self.unlisted: list[str] = []   # directories `files` could not list

    def read(self, rel: str) -> bytes | None:
        """The bytes of the regular file `rel`; None when there is none (or `rel` cannot name one:
        an absolute path, '..', a name longer than a file's can be)."""
        return self._regular(rel, "read_bytes")

    def sha256(self, rel: str) -> str | None:
        """The sha256 (hex) of the regular file `rel`, hashed as it is read (never held whole); None
        where `read` gives None."""
        return self._regular(rel, "sha256")

    def _regular(self, rel: str, how: str):
        """`PackageStore.<how>(rel)` for the regular file `rel`, or None (the one store: no link
        followed, regular files only)."""
        from auditkit.package.store import PackageStore

        if not isinstance(rel, str) or path_problem(rel):
            return None
        try:
            if self._store is None:
                self._store = PackageStore(self.root)
            return getattr(self._store, how)(rel) if self._store.is_file(rel) else None
        except AuditError:
            return None

    def files(self, under: str = "") -> list[str]:
        """The regular files of the package (only those under the folder `under`, when given).

        Listed by `package.listing.list_entries` (no link followed or entered, `.git` left out); a
        directory that cannot be listed is left out (and named in `unlisted`)."""
        if under and (path_problem(under.rstrip("/")) or not _is_real_dir(self.root / under.rstrip("/"))):
            return []  # (a link named like the folder is not followed)

        def unlisted(prefix: str, exc: OSError) -> None:
            if not prefix:  # (the package root itself is checked by the caller)
                raise AuditError(f"cannot list the package: {exc.strerror}", path=str(self.root)) from None
            if exc.errno != errno.ENOENT and prefix not in self.unlisted:
                self.unlisted.append(prefix)

        return sorted(rel for rel, mode in list_entries(self.root, under, on_error=unlisted)
                      if stat.S_ISREG(mode) and rel.rsplit("/", 1)[-1] != ".git"
                      and not path_problem(rel))   # (verify names unsafe ones)


def _is_real_dir(p: Path) -> bool:
    try:
        return stat.S_ISDIR(os.lstat(p).st_mode)
    except OSError:
        return False


def asserted_evidence(g: GateRef) -> dict:
    """A gate's freeze evidence when nothing but its own `frozen_at` speaks for it."""
    return {"level": Level.ASSERTED.value, "frozen_at": g.frozen_at or None, "time": None, "authority": None,
            "accuracy_seconds": None, "lead_seconds": None, "first_input_started_at": None,
            "signed_by": [], "seeds_bound": False, "untrusted": []}


def content_root(files: Sequence[tuple[str, str]]) -> str:
    """SPEC section 9's root over (path, sha256) pairs."""
    h = hashlib.sha256()
    for path, sha in sorted(files):
        h.update(f"{sha}  {path}\n".encode("utf-8"))
    return h.hexdigest()


def manifest_content_root(reader) -> str | None:
    """The content root from MANIFEST.json's entries (verify checks those against the files), or None."""
    data = reader.read("MANIFEST.json")
    try:
        files = loads_strict(data, "MANIFEST.json")["files"] if data is not None else None
        pairs = [(f["path"], f["sha256"]) for f in files if not f["path"].startswith(EVIDENCE_DIR + "/")]
    except (AuditError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return content_root(pairs)


def content_files(paths: Sequence[str]) -> list[str]:
    """The files a package attestation covers: all but the MANIFEST and evidence/."""
    return sorted(p for p in paths if p not in MANIFEST_FILES and not p.startswith(EVIDENCE_DIR + "/"))
