"""Load the package-format JSON Schemas and validate documents against them.

Schemas are checked themselves (`check_schema`) before any data is validated.
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources

import jsonschema
from jsonschema import Draft202012Validator

from auditkit.errors import AuditError
from auditkit.findings import Finding, json_location

SCHEMA_NAMES = (
    "manifest",
    "protocol",
    "rules",
    "decision",
    "run-row",
    "matrix-row",
    "run-summary",
    "checkpoint-metadata",
    "table-manifest",
    "figure-manifest",
    # v1.1 evidence/ (auditkit.evidence)
    "event",
    "dsse-envelope",
    "statement",
    "claims",
)


@lru_cache(maxsize=None)
def load_schema(name: str) -> dict:
    """The schema `name` (one of SCHEMA_NAMES), meta-validated. Raises AuditError if broken."""
    if name not in SCHEMA_NAMES:
        raise AuditError(f"unknown schema {name!r}", hint=f"one of: {', '.join(SCHEMA_NAMES)}")
    try:
        text = resources.files("auditkit.schemas").joinpath(f"{name}.schema.json").read_text("utf-8")
        schema = json.loads(text)
        Draft202012Validator.check_schema(schema)
    except (OSError, ValueError, jsonschema.SchemaError) as exc:
        raise AuditError(f"schema {name!r} is broken or missing: {exc}",
                         hint="reinstall auditkit (pip install .)") from exc
    return schema


@lru_cache(maxsize=None)
def validator(name: str) -> Draft202012Validator:
    return Draft202012Validator(load_schema(name))


def schema_errors(instance, name: str) -> list[tuple[str, str]]:
    """(json path, message) for every way `instance` breaks schema `name`, sorted."""
    out = []
    for err in validator(name).iter_errors(instance):
        out.append((json_location(err.absolute_path), err.message))
    return sorted(out)


def validate_document(instance, name: str, path: str, *, prefix_location: str = "") -> list[Finding]:
    """Findings (code `schema-invalid`) for `instance` against schema `name`."""
    findings = []
    for loc, msg in schema_errors(instance, name):
        findings.append(
            Finding(
                path=path,
                code="schema-invalid",
                location=(prefix_location + (", " if prefix_location else "") + loc) if prefix_location else loc,
                expected=f"a document valid against schema {name}",
                found=msg,
                message="the value at this location does not follow SPEC.md",
            )
        )
    return findings
