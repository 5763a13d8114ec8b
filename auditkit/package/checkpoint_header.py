"""A safetensors header read as the reference library reads it (serde_json): strict JSON with the
reference's number rules, nesting limit and lone-surrogate refusal, keys repeated noted rather
than lost; and how a header's values are shown in a finding (clipped, printable ASCII).

Used by the streaming checkpoint reader (`package.checkpoint`) and the architecture check
(`package.checkpoint_arch`).
"""

from __future__ import annotations

import json
import math
import re

MAX_JSON_DEPTH = 127              # serde_json refuses a 128th level of nesting
MAX_HEADER_TOKENS = 1_000_000     # commas, "{" and "[" in the header: about the number of JSON values
U64_MAX = 2 ** 64 - 1
I64_MIN = -(2 ** 63)


class HeaderRefused(ValueError):
    """The header is not JSON as the reference reads it; `found` says why."""


def _no_constant(name: str):
    raise HeaderRefused(f"{name} (not JSON)")


def _float(text: str) -> float:
    x = float(text)
    if not math.isfinite(x):
        raise HeaderRefused(f"number out of range: {clip(text, 24)}")
    return x


def _int(text: str):
    """An integer as serde_json keeps it: u64 or i64 when it fits, otherwise (and `-0`) a float."""
    if text != "-0" and len(text) <= 20:
        v = int(text)
        if I64_MIN <= v <= U64_MAX:
            return v
    return _float(text)


SURROGATE = re.compile("[\ud800-\udfff]")


class _Pairs:
    """object_pairs_hook: a dict keeping the last value of a repeated key (as the reference), noting the repeat."""

    def __init__(self):
        self.repeated: list[str] = []

    def __call__(self, pairs):
        out = dict(pairs)
        if len(out) != len(pairs):
            seen = set()
            for k, _ in pairs:
                if k in seen:
                    self.repeated.append(k)
                seen.add(k)
        return out


class HeaderTooComplex(ValueError):
    """More JSON values than auditkit parses (the reference would read them)."""


def load_header(raw: bytes | bytearray) -> tuple[object, list[str]]:
    """The parsed header and the repeated keys; HeaderRefused where the reference refuses the JSON.

    HeaderTooComplex before parsing when the header holds more than MAX_HEADER_TOKENS commas and brackets
    (counted in C, strings included): Python objects for 100 MB of `{},` take minutes and gigabytes."""
    tokens = raw.count(b",") + raw.count(b"{") + raw.count(b"[")
    if tokens > MAX_HEADER_TOKENS:
        raise HeaderTooComplex(f"{tokens} commas and brackets")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise HeaderRefused(f"not UTF-8 (byte {exc.start})") from None
    pairs = _Pairs()
    try:
        doc = json.loads(text, object_pairs_hook=pairs, parse_constant=_no_constant, parse_float=_float,
                         parse_int=_int)
    except RecursionError:
        raise HeaderRefused(f"nested deeper than {MAX_JSON_DEPTH} levels") from None
    except json.JSONDecodeError as exc:
        raise HeaderRefused(f"not JSON: {exc.msg} at byte {exc.pos}") from None
    # depth and lone surrogates: one walk, only when the text could hold either
    deep = text.count("[") + text.count("{") > MAX_JSON_DEPTH
    surrogates = "\\u" in text and re.search(r"\\u[dD][89a-fA-F]", text) is not None
    if deep or surrogates:
        stack = [(doc, 1)]
        while stack:
            node, depth = stack.pop()
            if isinstance(node, dict):
                if depth > MAX_JSON_DEPTH:
                    raise HeaderRefused(f"nested deeper than {MAX_JSON_DEPTH} levels")
                for k, v in node.items():
                    if surrogates and SURROGATE.search(k):
                        raise HeaderRefused("a lone surrogate escape in a key")
                    stack.append((v, depth + 1))
            elif isinstance(node, list):
                if depth > MAX_JSON_DEPTH:
                    raise HeaderRefused(f"nested deeper than {MAX_JSON_DEPTH} levels")
                stack.extend((v, depth + 1) for v in node)
            elif surrogates and isinstance(node, str) and SURROGATE.search(node):
                raise HeaderRefused("a lone surrogate escape in a string")
    return doc, pairs.repeated


def clip(text: str, n: int = 120) -> str:
    return text if len(text) <= n else text[:n] + "..."


def show(value) -> str:
    """A header value as printable ASCII (a header is attacker-controlled text)."""
    try:
        return clip(json.dumps(value, ensure_ascii=True))
    except (TypeError, ValueError):
        return clip(ascii(value))


def tensor_location(name: str) -> str:
    """The location of tensor `name`, quoted when the name is not plain printable text."""
    plain = name and name.isprintable() and name.strip() == name and not SURROGATE.search(name)
    return f"tensor {name}" if plain else f"tensor {show(name)}"
