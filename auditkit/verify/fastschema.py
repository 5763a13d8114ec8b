"""The compiled fast schema path: a plain predicate equal to "valid against the schema".

jsonschema takes ~0.2 ms a run row and as much a MANIFEST entry; a package holds
thousands.  `fast_valid` turns the subset of JSON Schema that the row and entry schemas
use into a predicate with the same answer (tests compare the two on generated
instances); only the instances it refuses go to jsonschema, which then says why (with
the failing keyword and JSON path).  A schema with a keyword outside the subset gets no
fast path (`fast_valid` returns None) and is validated by jsonschema alone.
"""

from __future__ import annotations

import functools
import re
from typing import Callable

from auditkit.package.schemas import SchemaViolation, iter_violations, load_schema

_IGNORED = {"$schema", "$id", "$comment", "title", "description"}


class _Unsupported(Exception):
    pass


def _same(a, b) -> bool:
    """JSON equality as jsonschema means it: booleans are not numbers."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    return a == b


def _is_type(x, t: str) -> bool:
    if t == "string":
        return isinstance(x, str)
    if t == "object":
        return isinstance(x, dict)
    if t == "array":
        return isinstance(x, list)
    if t == "boolean":
        return isinstance(x, bool)
    if t == "null":
        return x is None
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return False
    if t == "number":
        return True
    if t == "integer":
        return isinstance(x, int) or x.is_integer()
    raise _Unsupported(t)


def _format(name: str) -> Callable[[object], bool]:
    from auditkit.package.schemas import FORMATS

    if name not in FORMATS.checkers:
        return lambda x: True          # jsonschema only annotates a format its checker does not know
    return lambda x: FORMATS.conforms(x, name)


def _compile(schema) -> Callable[[object], bool]:
    if schema is True:
        return lambda x: True
    if schema is False:
        return lambda x: False
    if not isinstance(schema, dict):
        raise _Unsupported(repr(schema))
    keys = set(schema) - _IGNORED
    if keys <= {"type", "pattern", "minLength"} and schema.get("type") == "string":  # no format among them
        rx = re.compile(schema.get("pattern", ""))
        n = schema.get("minLength", 0)
        return lambda x: isinstance(x, str) and len(x) >= n and rx.search(x) is not None  # the common column
    tests: list[Callable[[object], bool]] = []
    for key, val in schema.items():
        if key in _IGNORED:
            continue
        if key == "type":
            types = val if isinstance(val, list) else [val]
            for t in types:
                _is_type(None, t)  # unsupported type names raise here
            tests.append(lambda x, ts=tuple(types): any(_is_type(x, t) for t in ts))
        elif key == "pattern":
            rx = re.compile(val)
            tests.append(lambda x, rx=rx: not isinstance(x, str) or rx.search(x) is not None)
        elif key == "format":
            tests.append(_format(val))
        elif key == "minLength":
            tests.append(lambda x, n=val: not isinstance(x, str) or len(x) >= n)
        elif key == "minimum":
            tests.append(lambda x, n=val: not _is_type(x, "number") or x >= n)
        elif key == "exclusiveMinimum":
            tests.append(lambda x, n=val: not _is_type(x, "number") or x > n)
        elif key == "enum":
            tests.append(lambda x, vs=tuple(val): any(_same(x, v) for v in vs))
        elif key == "const":
            tests.append(lambda x, v=val: _same(x, v))
        elif key == "required":
            tests.append(lambda x, ks=tuple(val): not isinstance(x, dict) or all(k in x for k in ks))
        elif key == "properties":
            subs = {k: _compile(v) for k, v in val.items()}
            tests.append(lambda x, subs=subs: not isinstance(x, dict)
                         or all(f(x[k]) for k, f in subs.items() if k in x))
        elif key == "additionalProperties":
            known = set(schema.get("properties", {}))
            sub = _compile(val)
            tests.append(lambda x, sub=sub, known=known: not isinstance(x, dict)
                         or all(sub(v) for k, v in x.items() if k not in known))
        elif key in ("allOf", "anyOf"):
            subs = [_compile(v) for v in val]
            agg = all if key == "allOf" else any
            tests.append(lambda x, subs=subs, agg=agg: agg(f(x) for f in subs))
        elif key == "if":
            cond = _compile(val)
            then = _compile(schema.get("then", True))
            other = _compile(schema.get("else", True))
            tests.append(lambda x, c=cond, t=then, o=other: t(x) if c(x) else o(x))
        elif key in ("then", "else"):
            continue
        else:
            raise _Unsupported(key)
    return lambda x: all(t(x) for t in tests)


@functools.lru_cache(maxsize=None)
def fast_valid(name: str, pointer: tuple[str, ...] = ()) -> Callable[[object], bool] | None:
    """A predicate equal to "valid against schema `name` (at `pointer`)", or None if the schema
    uses a keyword the compiler does not know."""
    schema = load_schema(name)
    for key in pointer:
        schema = schema[key]
    try:
        return _compile(schema)
    except (_Unsupported, re.error):
        return None


def row_violations(row: dict, name: str) -> list[SchemaViolation]:
    """Every way one CSV row breaks schema `name`; the compiled predicate answers for valid rows."""
    ok = fast_valid(name)
    if ok is not None and ok(row):
        return []
    return sorted(iter_violations(row, name), key=lambda v: (v.json_path, v.message))


# The schemas `verify` validates package files against (the others are other commands').
VERIFY_SCHEMAS = ("manifest", "protocol", "rules", "decision", "run-row", "matrix-row", "checkpoint-metadata",
                  "table-manifest", "figure-manifest")


def warm() -> None:
    """Compile the validators and fast paths verify uses (run in a thread while the first files are read)."""
    from auditkit.package.schemas import validator

    for name in VERIFY_SCHEMAS:
        validator(name)
    fast_valid("run-row")
    fast_valid("matrix-row")
    fast_valid("manifest", ("properties", "files", "items"))
