"""Profiles: a reviewer-written TOML file that says how to read a package auditkit did not write.

A profile never changes the package; it states, for each fact the SPEC v1
engine needs, where that fact is in the package's own bytes (a column, a file
name, a JSON path) or that the profile itself supplies it (a constant, a
label map, the rules the reviewer transcribed from the authors' prose).
This module holds the frozen `Profile` and its parts; `auditkit.profile.load`
reads and validates one (schema first, then sense); every way it is unusable
is an `AuditError` that names the key.  The format is documented in docs/PROFILES.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from auditkit.errors import AuditError

PROFILE_SCHEMA = "auditkit/profile/v1"
TODO = "TODO"
# run-row columns the gate engine and the row checks cannot do without
ENGINE_COLUMNS = ("run_id", "host", "stage", "seed", "config_id", "status", "val_bpb", "started_at")
DEFAULT_TOLERANCE = 5e-7  # half a unit in the 6th decimal: the autoresearch summary's precision


class Convert(str, Enum):
    """A simple conversion of one package value into its SPEC form."""

    MINUTES_TO_SECONDS = "minutes_to_seconds"
    HOURS_TO_SECONDS = "hours_to_seconds"
    LOCAL_TO_UTC = "local_to_utc"  # ISO-8601 with a UTC offset -> ...Z


class Source(str, Enum):
    """Where a run-row value comes from."""

    COLUMN = "column"    # a package column (renamed, perhaps converted or mapped)
    CAPTURE = "capture"  # a named part of the package's file name
    CONST = "const"      # a constant the profile states


class Provenance(str, Enum):
    """Who vouches for a fact: the package's bytes, or the reviewer's profile."""

    PACKAGE = "package"            # read verbatim from the package
    PACKAGE_VIA_PROFILE = "package+profile"  # a package value, converted or mapped as the profile says
    PROFILE = "profile"            # stated by the profile (a constant, a transcription)
    REPLAY = "replay"              # computed by auditkit from package values under profile rules


@dataclass(frozen=True)
class ColumnRule:
    target: str                      # the SPEC run-row column
    source: Source
    name: str                        # package column, capture name, or the constant (as text)
    convert: Convert | None = None
    map: tuple[tuple[str, str], ...] = ()
    implicit: bool = False           # not written in the profile: the same-named column or capture

    @property
    def provenance(self) -> Provenance:
        if self.source is Source.CONST:
            return Provenance.PROFILE
        if self.convert is not None or self.map:
            return Provenance.PACKAGE_VIA_PROFILE
        return Provenance.PACKAGE

    def describe(self) -> str:
        if self.source is Source.CONST:
            return f"constant {self.name!r} stated by the profile"
        what = f"package column {self.name!r}" if self.source is Source.COLUMN else f"file-name capture {{{self.name}}}"
        if self.implicit:
            what += " (same name)"
        if self.convert is not None:
            what += f", converted {self.convert.value}"
        if self.map:
            what += ", labels mapped by the profile (" + ", ".join(f"{a}->{b}" for a, b in self.map) + ")"
        return what


@dataclass(frozen=True)
class ManifestSpec:
    path: str
    path_column: str
    sha_column: str
    bytes_column: str | None = None
    entries: str | None = None       # JSON path of the entry list (JSON manifests)
    algorithm: str = "sha256"


@dataclass(frozen=True)
class MatrixSpec:
    path: str
    config_id: str = "config_id"
    role: str = "role"


@dataclass(frozen=True)
class RowsSpec:
    patterns: tuple[str, ...]
    columns: tuple[ColumnRule, ...]   # explicit rules only; the view adds the implicit ones

    def rule(self, target: str) -> ColumnRule | None:
        for r in self.columns:
            if r.target == target:
                return r
        return None


@dataclass(frozen=True)
class ProseRef:
    """A prose file of a gate, pinned by its hash. `seeds`/`stages`: the inputs it governs, for an
    addendum written for some of the gate's runs only (its date is compared with those runs alone)."""

    path: str
    sha256: str
    seeds: tuple[int, ...] | None = None
    stages: tuple[str, ...] | None = None


def prose_ref(p: dict) -> ProseRef:
    seeds, stages = p.get("seeds"), p.get("stages")
    return ProseRef(p["path"], p["sha256"], None if seeds is None else tuple(int(x) for x in seeds),
                    None if stages is None else tuple(str(x) for x in stages))


@dataclass(frozen=True)
class FieldMap:
    """Where per-candidate (or per-cell) values are in a recorded decision."""

    key: str                                  # the field/column holding the config_id
    at: str | None = None                     # JSON path of the record list/object (JSON only)
    host: str | None = None                   # cells only
    seed: str | None = None                   # cells only
    fields: tuple[tuple[str, str], ...] = ()  # (SPEC field, recorded field)


@dataclass(frozen=True)
class CheckMap:
    index: int
    passed: str | None = None
    value: str | None = None


@dataclass(frozen=True)
class RecordedSpec:
    path: str
    promoted: str | None = None
    ordered: bool = False
    candidates: FieldMap | None = None
    cells: FieldMap | None = None
    checks: tuple[CheckMap, ...] = ()
    tolerance: float = DEFAULT_TOLERANCE


@dataclass(frozen=True)
class GateSpec:
    gate: str
    prose: tuple[ProseRef, ...]
    rules: dict | None          # SPEC section 5 rules without frozen_at; None while still TODO
    recorded: tuple[RecordedSpec, ...] = ()


@dataclass(frozen=True)
class TableSpec:
    path: str
    generator: str
    table: str
    key: tuple[str, ...]
    columns: tuple[tuple[str, str], ...] = ()   # (recorded column, generated column)
    where: tuple[tuple[str, tuple[str, ...]], ...] = ()   # generated column -> the values kept
    tolerance: float = DEFAULT_TOLERANCE
    values: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = ()   # recorded column -> (authors' value, ours)
    accounting: str = "measured"      # compute from recorded training time, or "planned": each run's budget

    def value_map(self) -> dict[str, dict[str, str]]:
        return {c: dict(m) for c, m in self.values}

    def generated(self, recorded_column: str) -> str:
        return dict(self.columns).get(recorded_column, recorded_column)


@dataclass(frozen=True)
class Profile:
    name: str
    manifests: tuple[ManifestSpec, ...]
    matrix: MatrixSpec
    rows: RowsSpec
    gates: tuple[GateSpec, ...]
    tables: tuple[TableSpec, ...] = ()
    source: str = "<profile>"   # where it was read from
    sha256: str = ""            # of the profile file's bytes
    doc: dict = field(default_factory=dict, compare=False, repr=False)

    def gate(self, name: str) -> GateSpec:
        for g in self.gates:
            if g.gate == name:
                return g
        raise AuditError(f"unknown gate {name!r}", path=self.source,
                         hint=f"the profile's gates are: {', '.join(g.gate for g in self.gates)}")

    def todo_gates(self) -> list[str]:
        return [g.gate for g in self.gates if g.rules is None]

    def require_rules(self) -> None:
        """AuditError when a gate's rules are still TODO (a draft nobody finished)."""
        todo = self.todo_gates()
        if todo:
            g = self.gate(todo[0])
            raise AuditError(f"the rules of gate(s) {', '.join(todo)} are still TODO", path=self.source,
                             hint=f"transcribe them from {g.prose[0].path} into [gates.{g.gate}] rules "
                                  "(auditkit's rules form, docs/PROFILES.md)")
