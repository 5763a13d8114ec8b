"""Where a SARIF result points: `Places` maps a finding to a URI under `%SRCROOT%`, a region
and the located line's text, reading every package file through the store (each at most once);
`uri_of` and `repository_root` say how package paths become URIs."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from urllib.parse import quote

from auditkit.errors import AuditError
from auditkit.findings import Finding
from auditkit.report.sarif_spans import cell_span, github_line_hashes, json_spans, parent_path

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


def deep_clean(doc):
    """`doc` (a JSON-ready value) with every string and key passed through `clean`."""
    if isinstance(doc, str):
        return clean(doc)
    if isinstance(doc, dict):
        return {clean(str(k)): deep_clean(v) for k, v in doc.items()}
    if isinstance(doc, (list, tuple)):
        return [deep_clean(v) for v in doc]
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



class Places:
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
            span = cell_span(lines, no, m[2]) if m[2] and lines else None
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
                path = parent_path(path)
            if spans and path in spans:
                (l1, c1), (l2, c2) = spans[path]
                region = {"startLine": l1, "startColumn": c1, "endLine": l2, "endColumn": c2}
                return region, lines[l1 - 1]
        return line_region(1)


def uri_rel(uri: str, prefix: str) -> str:
    from urllib.parse import unquote

    return unquote(uri)[len(prefix):]
