"""Which generator version a derived file is checked against, shared by tables and figures: the
versions this auditkit can rerun (`known_versions`), the one a manifest entry names or implies
(`pick_version`), and the package's own manifest when it is valid (`valid_manifest`)."""

from __future__ import annotations

from auditkit.gates.documents import read_json
from auditkit.package.schemas import validate_document
from auditkit.errors import PackageDefect
from auditkit.package.store import PackageStore


def known_versions(kind: str, current: dict, as_of: dict) -> list[int]:
    """The versions of generator `kind` this auditkit can rerun, newest first."""
    if kind not in current:
        return []
    return [current[kind]] + sorted((v for k, v in as_of if k == kind), reverse=True)


def pick_version(entry: dict, kind: str, recorded: dict | None, candidates: list[int], matches) -> int:
    """The generator version a manifest entry is checked against: the one it records, else the
    manifest's `generators[kind]`; a manifest that records neither (auditkit before generator
    versions) is checked against the newest version `matches(version)` accepts (the one whose
    output is the file in the package), else the newest."""
    if "generator" in entry:
        return entry["generator"]
    if recorded is not None and kind in recorded:
        return recorded[kind]
    for v in candidates:
        if matches(v):
            return v
    return candidates[0] if candidates else 0


def valid_manifest(store: PackageStore, rel: str, schema: str) -> dict | None:
    """The package's own manifest `rel` when it is a readable file valid against `schema`, else None
    (its defects are the --check's findings, not the regenerator's business)."""
    if store.kind(rel) != "file":
        return None
    try:
        doc = read_json(store, rel)
    except PackageDefect:
        return None
    return None if validate_document(doc, schema, rel) else doc
