"""Scans of JSON bytes made before they are parsed, each one C pass or a few (`bytes.translate`,
substring searches): how deeply the document nests (`json_depth`), and whether it may hold a number
the strict reader's hooks refuse (`may_need_number_hooks`), so that the rest is parsed by json's own
number parsing. Both are checked against the parsed documents and the hooks in tests/test_verify_store.py.
"""

from __future__ import annotations

MAX_JSON_DEPTH = 64
MAX_INT_DIGITS = 64

_BRACKETS_AND_QUOTES = b'[]{}"'
_NOT_BRACKETS_OR_QUOTES = bytes(sorted(set(range(256)) - set(_BRACKETS_AND_QUOTES)))
_OPEN_BRACKETS = frozenset(b"[{")


def json_depth(data: bytes) -> int:
    """The deepest nesting of arrays and objects in `data` (brackets inside strings do not count);
    stops counting once past MAX_JSON_DEPTH. Escaped backslashes, then escaped quotes, are dropped
    (left to right, as a JSON reader reads them), so every quote left opens or closes a string; of
    the brackets and quotes alone (one C pass), the pieces between quote pairs are inside strings."""
    if b"\\" in data:
        data = data.replace(b"\\\\", b"").replace(b'\\"', b"")
    brackets = b"".join(data.translate(None, _NOT_BRACKETS_OR_QUOTES).split(b'"')[::2])
    depth = best = 0
    for c in brackets:
        if c in _OPEN_BRACKETS:
            depth += 1
            if depth > best:
                best = depth
                if best > MAX_JSON_DEPTH:
                    return best
        else:
            depth -= 1
    return best


# A number the hooks refuse has a long run of digits (an integer of more than MAX_INT_DIGITS, or a
# decimal of 309 or more before its point) or an exponent of three digits or more (1e400).  A document
# with neither (nearly all) is parsed by json's own number parsing, which gives the same values.  Found
# on the document's shape (one bytes.translate, then substring searches; a regular expression takes
# ten times as long): digits -> 0, '.' and '-' -> '.', e/E -> e, '+' -> +, what may stand before a
# JSON value (whitespace [ { , :) -> space, anything else -> x.  An exponent counts only where its
# number stands where a value may start, so a hash such as "...9e786..." does not count.
_NUMBER_SHAPES = bytes(48 if 48 <= b <= 57 else 46 if b in (45, 46) else 101 if b in (69, 101) else 43 if b == 43
                       else 32 if b in b" \t\r\n[{,:" else 120 for b in range(256))
_LONG_DIGITS = b"0" * (MAX_INT_DIGITS + 1)
_MANTISSA = frozenset(b"0.")
_MAX_EXPONENT_LOOKS = 1000     # more candidates than this: the hooks, which are always right


def may_need_number_hooks(raw: bytes) -> bool:
    """True when `raw` may hold a number the strict hooks refuse (see above); False only when it cannot."""
    shapes = raw.translate(_NUMBER_SHAPES)
    if _LONG_DIGITS in shapes:
        return True
    looks = 0
    for pattern in (b"e000", b"e+000"):
        i = shapes.find(pattern)
        while i >= 0:
            looks += 1
            if looks > _MAX_EXPONENT_LOOKS:
                return True
            j = i
            while j > 0 and shapes[j - 1] in _MANTISSA:
                j -= 1
            if j < i and (j == 0 or shapes[j - 1] == 32):
                return True
            i = shapes.find(pattern, i + 1)
    return False
