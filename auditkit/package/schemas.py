"""Load the package-format JSON Schemas and validate documents against them.

Schemas are checked themselves (`check_schema`) before any data is validated.
jsonschema is imported on first use, not with this module: `verify` decides most
documents with the compiled predicates of `auditkit.verify.fastschema` and needs
jsonschema only to say why a document breaks its schema.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import TYPE_CHECKING, Iterator

from auditkit.errors import AuditError
from auditkit.findings import Finding, json_location

if TYPE_CHECKING:
    from jsonschema import Draft202012Validator, FormatChecker

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
    # output of replay-gate --json: gates[].uncertainty (auditkit.stats.uncertainty)
    "uncertainty",
)


@lru_cache(maxsize=None)
def raw_schema(name: str) -> dict:
    """The schema `name` as shipped, parsed but not meta-validated (see `load_schema`)."""
    if name not in SCHEMA_NAMES:
        raise AuditError(f"unknown schema {name!r}", hint=f"one of: {', '.join(SCHEMA_NAMES)}")
    try:
        text = resources.files("auditkit.schemas").joinpath(f"{name}.schema.json").read_text("utf-8")
        return json.loads(text)
    except (OSError, ValueError) as exc:
        raise AuditError(f"schema {name!r} is broken or missing: {exc}",
                         hint="reinstall auditkit (pip install .)") from exc


@lru_cache(maxsize=None)
def load_schema(name: str) -> dict:
    """The schema `name` (one of SCHEMA_NAMES), meta-validated. Raises AuditError if broken."""
    import jsonschema

    schema = raw_schema(name)
    try:
        jsonschema.Draft202012Validator.check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise AuditError(f"schema {name!r} is broken: {exc}", hint="reinstall auditkit (pip install .)") from exc
    return schema


def is_date_time(value) -> bool:
    """The `date-time` format as jsonschema checks it: RFC 3339 with a real calendar date
    (rfc3339-validator, jsonschema's own choice); a non-string is not its business.  Its regex,
    like every `$` under Python's re, accepts a final newline: the schemas' patterns (ending in
    `(?!\\n)$`) refuse that."""
    from rfc3339_validator import validate_rfc3339

    return not isinstance(value, str) or validate_rfc3339(value.upper())


@lru_cache(maxsize=None)
def format_checker() -> "FormatChecker":
    """The formats the schemas use, checked (jsonschema only annotates a format unless given a checker)."""
    from jsonschema import FormatChecker

    checker = FormatChecker(formats=())
    checker.checks("date-time")(is_date_time)
    return checker


@lru_cache(maxsize=None)
def validator(name: str) -> "Draft202012Validator":
    from jsonschema import Draft202012Validator

    try:
        import rfc3339_validator  # noqa: F401 - jsonschema checks date-time only when it imports
    except ImportError:
        raise AuditError("the date-time format cannot be checked: rfc3339-validator is not installed",
                         hint="reinstall auditkit (pip install .), which depends on it") from None
    return Draft202012Validator(load_schema(name), format_checker=format_checker())


@dataclass(frozen=True)
class SchemaViolation:
    """One way an instance breaks a schema, as jsonschema's `ValidationError` says it.

    `json_path` is where in the instance (``$.files[3].sha256``), `keyword` the schema
    keyword that failed (``pattern``, ``required``, ``const``, ...), `schema_path` where in
    the schema that keyword is (``properties/val_bpb/pattern``)."""

    json_path: str
    keyword: str
    message: str
    schema_path: str = ""

    def expectation(self, name: str) -> str:
        """What the schema wanted, for a finding's `expected`: keyword and where it sits."""
        where = f" at {self.schema_path}" if self.schema_path and self.schema_path != self.keyword else ""
        return f"schema {name}, keyword {self.keyword}{where}"


def iter_violations(instance, name: str) -> Iterator[SchemaViolation]:
    """Every way `instance` breaks schema `name`, lazily, in jsonschema's order."""
    for err in validator(name).iter_errors(instance):
        yield SchemaViolation(json_location(err.absolute_path), str(err.validator), err.message,
                              "/".join(str(p) for p in err.absolute_schema_path))


def schema_errors(instance, name: str) -> list[tuple[str, str]]:
    """(json path, message) for every way `instance` breaks schema `name`, sorted."""
    return sorted((v.json_path, v.message) for v in iter_violations(instance, name))


def validate_document(instance, name: str, path: str, *, prefix_location: str = "") -> list[Finding]:
    """Findings (code `schema-invalid`) for `instance` against schema `name`: the JSON path of the
    failing value in `location`, the failing keyword (and where it sits in the schema) in `expected`."""
    violations = sorted(iter_violations(instance, name), key=lambda v: (v.json_path, v.message))
    return violation_findings(violations, name, path, prefix_location=prefix_location)


def violation_findings(violations, name: str, path: str, *, prefix_location: str = "") -> list[Finding]:
    """`schema-invalid` findings of `path` for the violations of schema `name`, in their order."""
    return [Finding(path=path, code="schema-invalid",
                    location=(prefix_location + ", " + v.json_path) if prefix_location else v.json_path,
                    expected=v.expectation(name), found=v.message,
                    message="the value at this location does not follow SPEC.md")
            for v in violations]
