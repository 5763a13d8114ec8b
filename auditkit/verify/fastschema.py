"""The compiled fast schema path: a plain predicate equal to "valid against the schema".

jsonschema takes ~0.2 ms a run row and as much a MANIFEST entry, and importing it and
meta-validating the schemas costs a tenth of a second; a package holds thousands of
rows.  `fast_valid` compiles the subset of JSON Schema (draft 2020-12) that the
package schemas use into a predicate with the same answer — tests compare the two on
every example and on generated instances — so a valid package is decided without
jsonschema.  Only an instance the predicate refuses goes to jsonschema, which then says
why (the failing keyword and JSON path), after meta-validating the schema.

The compiler checks every keyword value it compiles (a `minItems` that is not a
non-negative integer, a `pattern` that is not a valid expression, an unknown `type`,
...) and refuses the schema — no fast path, `fast_valid` returns None — on anything it
does not know, so a schema it cannot vouch for is always left to jsonschema.
"""

from __future__ import annotations

import functools
import re
from typing import TYPE_CHECKING, Callable

from auditkit.package.schemas import is_date_time, raw_schema

if TYPE_CHECKING:
    from auditkit.package.schemas import SchemaViolation

_IGNORED = {"$schema", "$id", "$comment", "title", "description", "default", "$defs"}   # $defs: read by $ref
_TYPES = {"string", "object", "array", "boolean", "null", "number", "integer"}


class _Unsupported(Exception):
    pass


def _same(a, b) -> bool:
    """JSON equality as jsonschema means it (`_utils.equal`): booleans are not numbers, at any depth."""
    if isinstance(a, str) or isinstance(b, str):
        return a == b
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    return a == b


def _is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


# JSON Schema's types as predicates (booleans are not numbers; 1.0 is an integer)
_ONE_TYPE: dict[str, Callable[[object], bool]] = {
    "string": lambda x: isinstance(x, str),
    "object": lambda x: isinstance(x, dict),
    "array": lambda x: isinstance(x, list),
    "boolean": lambda x: isinstance(x, bool),
    "null": lambda x: x is None,
    "number": _is_number,
    "integer": lambda x: (isinstance(x, int) and not isinstance(x, bool)) or (isinstance(x, float) and x.is_integer()),
}


def _is_type(x, t: str) -> bool:
    if t not in _ONE_TYPE:
        raise _Unsupported(t)
    return _ONE_TYPE[t](x)


def _count(val) -> int:
    if isinstance(val, bool) or not isinstance(val, int) or val < 0:
        raise _Unsupported(f"not a count: {val!r}")
    return val


def _number(val) -> float:
    if isinstance(val, bool) or not isinstance(val, (int, float)):
        raise _Unsupported(f"not a number: {val!r}")
    return val


def _schemas(val, ctx: "_Root") -> list:
    if not isinstance(val, list) or not val:
        raise _Unsupported(f"not a list of schemas: {val!r}")
    return [_compile(v, ctx) for v in val]


class _Root:
    """The schema document a compilation started from: what a local `$ref` ("#/$defs/x") points into,
    each reference compiled once (a reference met again while it compiles, a recursive schema, is
    called through its entry once that is filled)."""

    def __init__(self, root):
        self.root = root
        self.refs: dict[str, Callable[[object], bool] | None] = {}

    def ref(self, ref) -> Callable[[object], bool]:
        if not isinstance(ref, str) or not ref.startswith("#/"):
            raise _Unsupported(f"$ref {ref!r}")     # only references into the schema itself
        if ref not in self.refs:
            node = self.root
            for part in ref[2:].split("/"):
                part = part.replace("~1", "/").replace("~0", "~")
                if isinstance(node, dict) and part in node:
                    node = node[part]
                elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
                    node = node[int(part)]
                else:
                    raise _Unsupported(f"$ref {ref!r} points at nothing")
            self.refs[ref] = None
            self.refs[ref] = _compile(node, self)
        entry = self.refs[ref]
        return entry if entry is not None else (lambda x, r=ref: self.refs[r](x))


def _unique(x: list) -> bool:
    return all(not _same(x[i], x[j]) for i in range(len(x)) for j in range(i + 1, len(x)))


def _format(name) -> Callable[[object], bool]:
    if not isinstance(name, str):
        raise _Unsupported(f"format {name!r}")
    if name == "date-time":
        return is_date_time
    return lambda x: True          # a format the checker does not know is an annotation (as in jsonschema)


def _compile(schema, ctx: _Root | None = None) -> Callable[[object], bool]:
    if ctx is None:
        ctx = _Root(schema)
    if schema is True:
        return lambda x: True
    if schema is False:
        return lambda x: False
    if not isinstance(schema, dict):
        raise _Unsupported(repr(schema))
    keys = set(schema) - _IGNORED
    if keys <= {"type", "pattern", "minLength"} and schema.get("type") == "string" and \
            isinstance(schema.get("pattern", ""), str):
        rx = re.compile(schema.get("pattern", ""))
        n = _count(schema.get("minLength", 0))
        return lambda x: isinstance(x, str) and len(x) >= n and rx.search(x) is not None  # the common column
    tests: list[Callable[[object], bool]] = []
    for key, val in schema.items():
        if key in _IGNORED:
            continue
        if key == "type":
            types = val if isinstance(val, list) else [val]
            if not types or not all(isinstance(t, str) and t in _TYPES for t in types):
                raise _Unsupported(f"type {val!r}")
            tests.append(_ONE_TYPE[types[0]] if len(types) == 1 else
                         lambda x, ts=tuple(types): any(_is_type(x, t) for t in ts))
        elif key == "pattern":
            if not isinstance(val, str):
                raise _Unsupported(f"pattern {val!r}")
            rx = re.compile(val)
            tests.append(lambda x, rx=rx: not isinstance(x, str) or rx.search(x) is not None)
        elif key == "format":
            check = _format(val)
            tests.append(check)
        elif key == "minLength":
            tests.append(lambda x, n=_count(val): not isinstance(x, str) or len(x) >= n)
        elif key == "minimum":
            tests.append(lambda x, n=_number(val): not _is_number(x) or x >= n)
        elif key == "exclusiveMinimum":
            tests.append(lambda x, n=_number(val): not _is_number(x) or x > n)
        elif key == "enum":
            if not isinstance(val, list):
                raise _Unsupported(f"enum {val!r}")
            tests.append(lambda x, vs=tuple(val): any(_same(x, v) for v in vs))
        elif key == "const":
            tests.append(lambda x, v=val: _same(x, v))
        elif key == "required":
            if not isinstance(val, list) or not all(isinstance(k, str) for k in val):
                raise _Unsupported(f"required {val!r}")
            tests.append(lambda x, ks=frozenset(val): not isinstance(x, dict) or ks <= x.keys())
        elif key == "properties":
            if not isinstance(val, dict):
                raise _Unsupported(f"properties {val!r}")
            tests.append(_properties({k: _compile(v, ctx) for k, v in val.items()}))
        elif key == "additionalProperties":
            known = frozenset(schema.get("properties", {}))
            if val is False:           # no other key at all: a set comparison
                tests.append(lambda x, known=known: not isinstance(x, dict) or x.keys() <= known)
            else:
                sub = _compile(val, ctx)
                tests.append(lambda x, sub=sub, known=known: not isinstance(x, dict)
                             or all(sub(v) for k, v in x.items() if k not in known))
        elif key == "prefixItems":
            subs = _schemas(val, ctx)
            tests.append(lambda x, subs=subs: not isinstance(x, list) or all(f(v) for f, v in zip(subs, x)))
        elif key == "items":           # 2020-12: the elements after those prefixItems covers
            sub = _compile(val, ctx)
            start = len(schema.get("prefixItems", []))
            tests.append(_items(sub, start))
        elif key == "minItems":
            tests.append(lambda x, n=_count(val): not isinstance(x, list) or len(x) >= n)
        elif key == "maxItems":
            tests.append(lambda x, n=_count(val): not isinstance(x, list) or len(x) <= n)
        elif key == "uniqueItems":
            if not isinstance(val, bool):
                raise _Unsupported(f"uniqueItems {val!r}")
            if val:
                tests.append(lambda x: not isinstance(x, list) or _unique(x))
        elif key in ("allOf", "anyOf", "oneOf"):
            subs = _schemas(val, ctx)
            if key == "oneOf":
                tests.append(lambda x, subs=subs: sum(1 for f in subs if f(x)) == 1)
            else:
                agg = all if key == "allOf" else any
                tests.append(lambda x, subs=subs, agg=agg: agg(f(x) for f in subs))
        elif key == "if":
            cond = _compile(val, ctx)
            then = _compile(schema.get("then", True), ctx)
            other = _compile(schema.get("else", True), ctx)
            tests.append(lambda x, c=cond, t=then, o=other: t(x) if c(x) else o(x))
        elif key in ("then", "else"):
            continue
        elif key == "$ref":            # 2020-12: beside the other keywords, all of which must hold too
            tests.append(ctx.ref(val))
        elif key == "minProperties":
            tests.append(lambda x, n=_count(val): not isinstance(x, dict) or len(x) >= n)
        else:
            raise _Unsupported(key)
    return _all_of(tests)


def _items(sub: Callable[[object], bool], start: int) -> Callable[[object], bool]:
    def check(x) -> bool:   # a loop, not all(generator): a MANIFEST holds thousands of entries
        if not isinstance(x, list):
            return True
        for v in x[start:] if start else x:
            if not sub(v):
                return False
        return True
    return check


def _properties(subs: dict[str, Callable[[object], bool]]) -> Callable[[object], bool]:
    items = tuple(subs.items())

    def check(x) -> bool:   # a loop, not all(generator): this runs once per object of a large document
        if not isinstance(x, dict):
            return True
        for k, f in items:
            if k in x and not f(x[k]):
                return False
        return True
    return check


def _all_of(tests: list[Callable[[object], bool]]) -> Callable[[object], bool]:
    if len(tests) == 1:
        return tests[0]
    tests_t = tuple(tests)

    def check(x) -> bool:
        for t in tests_t:
            if not t(x):
                return False
        return True
    return check


@functools.lru_cache(maxsize=None)
def fast_valid(name: str, pointer: tuple[str, ...] = ()) -> Callable[[object], bool] | None:
    """A predicate equal to "valid against schema `name` (at `pointer`)", or None if the schema
    uses a keyword (or a keyword value) the compiler does not know."""
    schema = root = raw_schema(name)
    try:
        for key in pointer:
            schema = schema[key]
        return _compile(schema, _Root(root))
    except (_Unsupported, re.error, KeyError, TypeError):
        return None


def violations(instance, name: str) -> list["SchemaViolation"]:
    """Every way `instance` breaks schema `name`, sorted; the compiled predicate answers for valid
    instances, jsonschema (imported then) says what is wrong with the others."""
    ok = fast_valid(name)
    if ok is not None and ok(instance):
        return []
    from auditkit.package.schemas import iter_violations

    return sorted(iter_violations(instance, name), key=lambda v: (v.json_path, v.message))


row_violations = violations   # one CSV row is an instance like any other


# The schemas `verify` validates package files against (the others are other commands').
VERIFY_SCHEMAS = ("manifest", "protocol", "rules", "decision", "run-row", "matrix-row", "checkpoint-metadata",
                  "table-manifest", "figure-manifest", "claims")


def warm() -> None:
    """Compile the predicates verify uses (run in a thread while the first files are read)."""
    for name in VERIFY_SCHEMAS:
        fast_valid(name)
