"""Positions in a package file's text, for SARIF: GitHub's line fingerprint
(`github_line_hashes`), a CSV cell's column span (`cell_span`) and every JSON value's
line and column span (`json_spans`).  Pure functions of text already read through the store."""

from __future__ import annotations

import bisect
import json
import re

# --- GitHub's line fingerprint -------------------------------------------------------------------

_WINDOW = 100
_MASK = (1 << 64) - 1
_FIRST = pow(37, _WINDOW, 1 << 64)


def github_line_hashes(text: str) -> dict[int, str]:
    """line number -> `primaryLocationLineHash` as GitHub's upload computes it for a file (the
    CodeQL action's documented rolling hash: over the UTF-16 code units of the next 100 characters
    from each line's start, spaces and tabs skipped, CR and CRLF read as LF, base 37 modulo 2**64,
    the end of the file marked by U+FFFF and padded with zeros; the hex value followed by how many
    lines before had the same one).  Written here so that GitHub finds the value it computes and
    warns of no inconsistent fingerprint."""
    units = memoryview(text.encode("utf-16-le")).cast("H").tolist()
    units.append(0xFFFF)
    window = [0] * _WINDOW
    starts = [-1] * _WINDOW
    h = idx = line = 0
    line_start, prev_cr = True, False
    counts: dict[str, int] = {}
    out: dict[int, str] = {}

    def emit() -> None:
        value = format(h, "x")
        counts[value] = counts.get(value, 0) + 1
        out[starts[idx]] = f"{value}:{counts[value]}"
        starts[idx] = -1

    for cur in units:
        if cur in (0x20, 0x09) or (prev_cr and cur == 0x0A):
            prev_cr = False
            continue
        if cur == 0x0D:
            cur, prev_cr = 0x0A, True
        else:
            prev_cr = False
        if starts[idx] != -1:
            emit()
        if line_start:
            line_start = False
            line += 1
            starts[idx] = line
        if cur == 0x0A:
            line_start = True
        h = (37 * h + cur - _FIRST * window[idx]) & _MASK
        window[idx] = cur
        idx = (idx + 1) % _WINDOW
    for _ in range(_WINDOW):
        if starts[idx] != -1:
            emit()
        h = (37 * h - _FIRST * window[idx]) & _MASK
        window[idx] = 0
        idx = (idx + 1) % _WINDOW
    return out


def parent_path(path: str) -> str:
    if path.endswith("]"):
        return path[:path.rindex("[")]
    return path[:path.rindex(".")] if "." in path else "$"


def cell_span(lines: list[str], no: int, column: str) -> tuple[int, int] | None:
    """1-based [start, end) columns of `column`'s cell on line `no` of a CSV file (quoted fields
    included, on one line), or None."""
    if no > len(lines):
        return None
    header = cell_fields(lines[0])
    cells = cell_fields(lines[no - 1])
    if header is None or cells is None:
        return None
    names = [lines[0][a:b].strip('"') for a, b in header]
    if column not in names or names.index(column) >= len(cells):
        return None
    a, b = cells[names.index(column)]
    return a + 1, b + 1


def cell_fields(line: str) -> list[tuple[int, int]] | None:
    """[start, end) offsets of the fields of one CSV line (RFC 4180 quoting); None when a quote is
    left open (the record goes on on the next line)."""
    out, i, n = [], 0, len(line.rstrip("\r"))
    while True:
        start = i
        if i < n and line[i] == '"':
            i += 1
            while True:
                j = line.find('"', i)
                if j < 0 or j >= n:
                    return None
                if j + 1 < n and line[j + 1] == '"':
                    i = j + 2
                    continue
                i = j + 1
                break
            while i < n and line[i] != ",":
                i += 1
        else:
            j = line.find(",", i, n)
            i = n if j < 0 else j
        out.append((start, i))
        if i >= n:
            return out
        i += 1


# --- JSON positions ------------------------------------------------------------------------------

_WS = re.compile(r"[ \t\n\r]*")
_NUMBER = re.compile(r"-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?")
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.S)


def json_spans(text: str) -> dict[str, tuple[tuple[int, int], tuple[int, int]]] | None:
    """For every value of the JSON document `text`: its path (as `findings.json_location` writes
    it) -> ((line, column), (line, end column)) of the value, 1-based, end exclusive.  A document
    that is not well formed maps what was read before the fault (None when nothing)."""
    starts = [0] + [m.end() for m in re.finditer("\n", text)]
    out: dict = {}

    def pos(i: int) -> tuple[int, int]:
        line = bisect.bisect_right(starts, i) - 1
        return line + 1, i - starts[line] + 1

    def skip(i: int) -> int:
        return _WS.match(text, i).end()

    # an explicit stack (documents are capped at 64 levels by the store, but this reads any text)
    def value(i: int, path: str) -> int:
        i = skip(i)
        start = i
        ch = text[i:i + 1]
        if ch == "{":
            i = skip(i + 1)
            if text[i:i + 1] == "}":
                i += 1
            else:
                while True:
                    m = _STRING.match(text, i)
                    if not m:
                        raise ValueError("key")
                    key = json.loads(m[0])
                    i = skip(m.end())
                    if text[i:i + 1] != ":":
                        raise ValueError(":")
                    i = value(i + 1, f"{path}.{key}")
                    i = skip(i)
                    if text[i:i + 1] == ",":
                        i = skip(i + 1)
                        continue
                    if text[i:i + 1] != "}":
                        raise ValueError("}")
                    i += 1
                    break
        elif ch == "[":
            i = skip(i + 1)
            k = 0
            if text[i:i + 1] == "]":
                i += 1
            else:
                while True:
                    i = skip(value(i, f"{path}[{k}]"))
                    k += 1
                    if text[i:i + 1] == ",":
                        i += 1
                        continue
                    if text[i:i + 1] != "]":
                        raise ValueError("]")
                    i += 1
                    break
        elif ch == '"':
            m = _STRING.match(text, i)
            if not m:
                raise ValueError("string")
            i = m.end()
        else:
            m = _NUMBER.match(text, i)
            if m and m.end() > i:
                i = m.end()
            else:
                for word in ("true", "false", "null"):
                    if text.startswith(word, i):
                        i += len(word)
                        break
                else:
                    raise ValueError("value")
        (l1, c1), end = pos(start), pos(i)
        out[path] = ((l1, c1), end)
        return i

    try:
        value(0, "$")
    except (ValueError, RecursionError, IndexError):
        pass
    return out or None
