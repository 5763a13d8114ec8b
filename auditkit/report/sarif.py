"""SARIF 2.1.0 from auditkit reports, in the shape GitHub code scanning reads.

`sarif_log(reports, package_dir=..., root=...)` makes one run per `Report` (verify,
replay-gate, tables --check, claims ...), all with the tool `auditkit` and each its own
`automationDetails.id` (GitHub keeps several runs of one tool apart by that category).

- Every rule carries the finding-code catalogue's text (`auditkit.codes`): what the code
  means as its description, and meaning plus what to do as `help.text`.
- Every result has a physical location with a region: a CSV cell (``row 3, column val_bpb``)
  is its line and the cell's column span, a JSON path (``$.inputs[2].sha256``) the line and
  columns of that value, ``line N`` that line, ``byte N`` that byte's line and column.  A
  finding about a file the repository does not hold (a missing file, a name outside the
  package such as ``../x`` or ``/etc/passwd`` from an attestation subject) is placed where
  the package lists that name (MANIFEST.json, protocol.json ...), else at protocol.json's
  first line, and names the file in its message: no URI ever points outside the package.
- URIs are relative to the repository root (`%SRCROOT%`): `root` when given (`--sarif-root`),
  else the top of the git checkout that holds the package, else the package itself.  A
  package path is percent-encoded from its bytes, so a file name that is not UTF-8 stays
  exact.
- `partialFingerprints.primaryLocationLineHash` is a hash of the rule and the located
  line's text (with an occurrence count), so an alert survives lines moving in the file.
- Every file is read through the package store (no-follow, regular files only, size caps).

`error_log(command, error)` is the document of a command that could not check (exit 2):
one run with `executionSuccessful: false` and the reason as a `toolExecutionNotification`.
The output is validated against the OASIS SARIF 2.1.0 schema in the tests.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import os
import re
from pathlib import Path
from typing import Iterable, Sequence
from urllib.parse import quote

from auditkit import __version__
from auditkit.errors import AuditError
from auditkit.findings import Finding, Report

SARIF_SCHEMA = "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json"
SRCROOT = "%SRCROOT%"
LOCATE_MAX_BYTES = 16 * 1024 * 1024   # a larger file is placed at its first line, not parsed for positions
HASH_MAX_BYTES = 4 * 1024 * 1024      # a larger file gets auditkit's own line fingerprint, not GitHub's
ANCHORS = ("MANIFEST.json", "protocol.json", "table_manifest.json", "figure_manifest.json")
_ROW = re.compile(r"^row (\d+)(?:, column (.+))?$")
_LINE = re.compile(r"^line (\d+)(?:, column (\d+))?$")
_BYTE = re.compile(r"^byte (\d+)$")
_SURROGATE = re.compile("[\ud800-\udfff]")


def clean(text: str) -> str:
    """`text` with every lone surrogate (a file name that was not UTF-8, a JSON "\\udc80") as U+FFFD:
    what a strict JSON reader accepts."""
    return _SURROGATE.sub("\ufffd", text)


def _deep_clean(doc):
    if isinstance(doc, str):
        return clean(doc)
    if isinstance(doc, dict):
        return {clean(str(k)): _deep_clean(v) for k, v in doc.items()}
    if isinstance(doc, (list, tuple)):
        return [_deep_clean(v) for v in doc]
    return doc


def uri_of(rel: str) -> str:
    """A relative URI for the repository path `rel`, percent-encoded from its bytes (a name decoded
    with surrogateescape gets its original bytes back; any other lone surrogate becomes U+FFFD)."""
    try:
        data = os.fsencode(rel)
    except UnicodeEncodeError:
        data = clean(rel).encode()
    return quote(data, safe="/")


def repository_root(package: Path) -> Path:
    """The top of the git checkout that holds `package` (a `.git` directory or file), else `package`."""
    for d in (package, *package.parents):
        if os.path.lexists(d / ".git"):
            return d
    return package


# --- the document --------------------------------------------------------------------------------

def sarif_log(reports: Sequence[Report], *, package_dir: str | Path | None = None,
              root: str | Path | None = None, user_files: Iterable[str] = ()) -> dict:
    """The SARIF 2.1.0 log (a JSON-ready dict) of `reports`.  `package_dir` is the package (a
    directory, or an archive whose findings are placed at the archive); `root` the directory URIs
    are relative to (AuditError when the package is not inside it); `user_files` files the user
    named on the command line (`--claims FILE`) that may lie outside the package."""
    places = _Places(package_dir, root, user_files)
    try:
        return {"$schema": SARIF_SCHEMA, "version": "2.1.0",
                "runs": [_deep_clean(_run(r, places)) for r in reports]}
    finally:
        places.close()


def sarif_text(reports: Sequence[Report], **kwargs) -> str:
    return dump(sarif_log(reports, **kwargs))


def dump(log: dict) -> str:
    return json.dumps(log, indent=2, ensure_ascii=False) + "\n"


def _driver(rules: list | None = None) -> dict:
    return {"name": "auditkit", "version": __version__, "semanticVersion": __version__, "rules": rules or []}


def error_log(command: str, error: AuditError, *, command_line: str = "") -> dict:
    """The log of a command that could not check (exit 2): no results, the invocation unsuccessful,
    and what failed (with the hint) as its notification."""
    text = error.message + (f" (hint: {error.hint})" if error.hint else "")
    note: dict = {"level": "error", "message": {"text": text}, "descriptor": {"id": "could-not-check"}}
    if error.path:
        note["properties"] = {"path": error.path}
    run = {"tool": {"driver": _driver()}, "automationDetails": {"id": f"auditkit/{command.split()[0]}/"},
           "invocations": [{"executionSuccessful": False, "exitCode": 2,
                            "commandLine": command_line or f"auditkit {command}",
                            "toolExecutionNotifications": [note]}],
           "results": [], "columnKind": "unicodeCodePoints"}
    return {"$schema": SARIF_SCHEMA, "version": "2.1.0", "runs": [_deep_clean(run)]}


def _rule(code: str, fallback: str) -> dict:
    from auditkit.codes import lookup

    entry = lookup(code)
    meaning = entry.meaning if entry else (fallback or code.replace("-", " "))
    action = entry.action if entry else "See docs/FINDINGS.md."
    short = re.split(r"(?<=[.!?])\s", meaning, maxsplit=1)[0]
    rule = {"id": code, "name": "".join(w.capitalize() for w in code.split("-")),
            "shortDescription": {"text": short}, "fullDescription": {"text": meaning},
            "help": {"text": f"{meaning}\n\nWhat to do: {action}",
                     "markdown": f"{meaning}\n\n**What to do:** {action}\n\n(`auditkit explain {code}`)"},
            "defaultConfiguration": {"level": "error"}}
    if entry:
        rule["properties"] = {"tags": [entry.family.value]}
    return rule


def _run(report: Report, places: "_Places") -> dict:
    findings = report.sorted_findings()
    codes = sorted({f.code for f in findings})
    first: dict[str, Finding] = {}
    for f in findings:
        first.setdefault(f.code, f)
    seen: dict[str, int] = {}
    results = []
    for f in findings:
        res = _result(f, codes.index(f.code), places)
        h = res["partialFingerprints"]["primaryLocationLineHash"]
        if ":" not in h:   # not GitHub's hash of a file line: our own, numbered the same way
            seen[h] = seen.get(h, 0) + 1
            res["partialFingerprints"]["primaryLocationLineHash"] = f"{h}:{seen[h]}"
        results.append(res)
    run = {
        "tool": {"driver": _driver([_rule(c, first[c].message) for c in codes])},
        "automationDetails": {"id": f"auditkit/{report.command.split()[0]}/"},
        "invocations": [{"executionSuccessful": True, "exitCode": report.exit_code,
                         "commandLine": f"auditkit {report.command} {report.target}",
                         "properties": {"checked": dict(report.checked),
                                        "info": {k: str(v) for k, v in report.info.items()}}}],
        "results": results,
        "columnKind": "unicodeCodePoints",
    }
    if places.root is not None:
        run["originalUriBaseIds"] = {SRCROOT: {"uri": places.root.as_uri() + "/"}}
    return run


def _result(f: Finding, rule_index: int, places: "_Places") -> dict:
    text = f.message or f.code.replace("-", " ")
    detail = f.detail()
    if detail:
        text += f" ({'; '.join(detail)})"
    uri, region, line_text, moved, line_hash = places.locate(f)
    if moved:
        text = f"{f.path or 'the package'}: {text}"
    if f.location:
        text += f" [at {f.location}]"
    res: dict = {"ruleId": f.code, "ruleIndex": rule_index, "level": "error", "message": {"text": text},
                 "partialFingerprints": {
                     "primaryLocationLineHash": line_hash or hashlib.sha256(
                         f"{f.code}\0{' '.join(line_text.split()) or (f.path + chr(0) + f.location)}"
                         .encode("utf-8", "surrogatepass")).hexdigest()[:16],
                     "auditkitFinding/v1": hashlib.sha256(
                         f"{f.code}|{f.path}|{f.location}".encode("utf-8", "surrogatepass")).hexdigest()},
                 "properties": {k: v for k, v in f.to_dict().items() if k not in ("code", "message", "hint")}}
    loc: dict = {}
    if uri is not None:
        loc["physicalLocation"] = {"artifactLocation": {"uri": uri, "uriBaseId": SRCROOT}, "region": region}
    if f.location.startswith("$"):
        last = f.location.rsplit(".", 1)[-1]
        loc["logicalLocations"] = [{"fullyQualifiedName": f.location,
                                    "kind": "element" if last.endswith("]") else "property"}]
    if loc:
        res["locations"] = [loc]
    return res


# --- where a finding is --------------------------------------------------------------------------

class _Places:
    """Maps a finding to (URI, region, the line's text, whether it was moved to an anchor).
    Reads every file through the store, each at most once."""

    def __init__(self, package_dir, root, user_files):
        from auditkit.package.store import PackageStore

        self.store = None
        self.archive: Path | None = None
        self.pkg: Path | None = None
        self.root: Path | None = None
        if package_dir is not None:
            p = Path(package_dir)
            if p.is_dir():
                self.pkg = p.resolve()
                self.store = PackageStore(self.pkg)
            elif p.is_file():
                self.archive = p.resolve()
        base = self.pkg or (self.archive.parent if self.archive else None)
        if root is not None:
            self.root = Path(root).resolve()
            if base is not None and base != self.root and self.root not in base.parents:
                raise AuditError("the package is not inside --sarif-root", path=str(root),
                                 hint="give the repository's top directory, one that holds the package")
        elif base is not None:
            self.root = repository_root(base)
        self.prefix = ""
        if self.pkg is not None and self.root is not None and self.pkg != self.root:
            self.prefix = self.pkg.relative_to(self.root).as_posix() + "/"
        self.user = {}
        for name in user_files:
            self.user[name] = Path(name).resolve()
        self.lines: dict[str, list[str] | None] = {}
        self.spans: dict[str, dict | None] = {}
        self.hashes: dict[str, dict | None] = {}
        self.others: list = []

    def close(self) -> None:
        for s in [self.store, *self.others]:
            if s is not None:
                s.close()

    # reading -------------------------------------------------------------------------------------
    def _text(self, key: str, store, rel: str) -> list[str] | None:
        if key not in self.lines:
            from auditkit.package.store import decode_utf8

            try:
                data = store.read_bytes(rel, cap=LOCATE_MAX_BYTES)
                self.lines[key] = decode_utf8(data, rel).split("\n")
            except (AuditError, OSError, ValueError):
                self.lines[key] = None
        return self.lines[key]

    def _source(self, path: str):
        """(store, rel, uri) of a file the repository holds, or None."""
        from auditkit.package.store import PackageStore, unsafe_reason

        if path in self.user:
            full = self.user[path]
            if self.pkg is not None and self.pkg in full.parents:
                path = full.relative_to(self.pkg).as_posix()
            elif self.root is not None and self.root in full.parents:
                try:
                    store = PackageStore(full.parent)
                except AuditError:
                    return None
                self.others.append(store)
                return store, full.name, uri_of(full.relative_to(self.root).as_posix())
            else:
                return None
        if self.store is None or not path or unsafe_reason(path) or self.store.kind(path) != "file":
            return None
        return self.store, path, uri_of(self.prefix + path)

    def locate(self, f: Finding):
        if self.archive is not None:   # the members are not files of the repository: the archive is
            rel = self.archive.relative_to(self.root).as_posix() if self.root else self.archive.name
            return uri_of(rel), {"startLine": 1}, "", True, None
        src = self._source(f.path)
        if src is not None:
            store, rel, uri = src
            region, text = self._region(f, store, rel, uri)
            return uri, region, text, False, self._line_hash(uri, store, rel, region["startLine"])
        anchor = self._anchor(f.path)
        if anchor is None:
            return None, None, "", True, None
        uri, region, text = anchor
        return uri, region, text, True, self._line_hash(uri, self.store, uri_rel(uri, self.prefix), region["startLine"])

    def _line_hash(self, key: str, store, rel: str, line: int) -> str | None:
        """GitHub's primaryLocationLineHash of `line` (`github_line_hashes`), or None for a file too
        large to hash here."""
        if key not in self.hashes:
            try:
                data = store.read_bytes(rel, cap=HASH_MAX_BYTES)
                self.hashes[key] = github_line_hashes(data.decode("utf-8", "replace"))
            except (AuditError, OSError):
                self.hashes[key] = None
        table = self.hashes[key]
        return table.get(line) if table else None

    def _anchor(self, name: str):
        """Where the package mentions `name` (a JSON string in one of ANCHORS), else the first line
        of protocol.json; None without a package."""
        if self.store is None:
            return None
        needle = json.dumps(name, ensure_ascii=False)[1:-1] if name else None
        for rel in ANCHORS:
            if self.store.kind(rel) != "file":
                continue
            lines = self._text(rel, self.store, rel)
            if not lines:
                continue
            if needle:
                for no, line in enumerate(lines, 1):
                    col = line.find(f'"{needle}"')
                    if col >= 0:
                        return uri_of(self.prefix + rel), {"startLine": no, "startColumn": col + 1,
                                                           "endColumn": col + len(needle) + 3}, line
        for rel in ANCHORS:
            if self.store.kind(rel) == "file":
                lines = self._text(rel, self.store, rel) or [""]
                return uri_of(self.prefix + rel), {"startLine": 1}, lines[0]
        return None

    def _region(self, f: Finding, store, rel: str, key: str):
        lines = self._text(key, store, rel)
        loc = f.location

        def line_region(no: int, start: int | None = None, end: int | None = None):
            text = lines[no - 1] if lines and 0 < no <= len(lines) else ""
            region: dict = {"startLine": max(no, 1)}
            if start is not None:
                region["startColumn"], region["endColumn"] = start, max(end, start)
            elif text:
                region["startColumn"], region["endColumn"] = 1, len(text) + 1
            return region, text

        m = _LINE.match(loc)
        if m:
            col = int(m[2]) if m[2] else None
            return line_region(int(m[1]), col, col + 1 if col else None)
        m = _ROW.match(loc)
        if m:
            no = int(m[1]) + 1   # data row N is line N + 1 (the header is line 1)
            span = _cell_span(lines, no, m[2]) if m[2] and lines else None
            return line_region(no, *span) if span else line_region(no)
        if loc == "header" or loc.startswith("column "):
            return line_region(1)
        m = _BYTE.match(loc)
        if m:
            try:
                data = store.read_bytes(rel, cap=LOCATE_MAX_BYTES)
            except (AuditError, OSError):
                return line_region(1)
            off = min(int(m[1]), len(data))
            no = data.count(b"\n", 0, off) + 1
            col = off - (data.rfind(b"\n", 0, off) + 1) + 1
            return {"startLine": no, "startColumn": col, "endColumn": col + 1}, ""
        if loc.startswith("$") and lines:
            spans = self.spans.get(key)
            if key not in self.spans:
                spans = self.spans[key] = json_spans("\n".join(lines))
            path = loc
            while spans is not None and path not in spans and path != "$":
                path = _parent(path)
            if spans and path in spans:
                (l1, c1), (l2, c2) = spans[path]
                region = {"startLine": l1, "startColumn": c1, "endLine": l2, "endColumn": c2}
                return region, lines[l1 - 1]
        return line_region(1)


def uri_rel(uri: str, prefix: str) -> str:
    from urllib.parse import unquote

    return unquote(uri)[len(prefix):]


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


def _parent(path: str) -> str:
    if path.endswith("]"):
        return path[:path.rindex("[")]
    return path[:path.rindex(".")] if "." in path else "$"


def _cell_span(lines: list[str], no: int, column: str) -> tuple[int, int] | None:
    """1-based [start, end) columns of `column`'s cell on line `no` of a CSV file (quoted fields
    included, on one line), or None."""
    if no > len(lines):
        return None
    header = _fields(lines[0])
    cells = _fields(lines[no - 1])
    if header is None or cells is None:
        return None
    names = [lines[0][a:b].strip('"') for a, b in header]
    if column not in names or names.index(column) >= len(cells):
        return None
    a, b = cells[names.index(column)]
    return a + 1, b + 1


def _fields(line: str) -> list[tuple[int, int]] | None:
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
