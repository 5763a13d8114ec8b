"""The package's files against its MANIFEST (SPEC section 9).

Every entry that was refused while reading (links, special files, unsafe names);
paths that collide on other file systems; MANIFEST.json's schema, entries (unsafe,
duplicated, unsorted, listing the manifests), every file missing, changed, resized
or unlisted, the recorded `root`; MANIFEST.csv against MANIFEST.json.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from typing import Iterator

from auditkit.findings import Finding
from auditkit.package.manifest import MANIFEST_CSV, MANIFEST_JSON, Entry, root_hash
from auditkit.package.scanned import printable_name, unsafe_reason
from auditkit.verify.view import PackageView, finding


def check(view: PackageView) -> Iterator[Finding]:
    yield from refused(view)
    yield from collisions(view)
    yield from manifest(view)


def refused(view: PackageView) -> Iterator[Finding]:
    for code, rel, found in view.problems:
        yield finding(printable_name(rel), code, "", "a regular file at a safe relative path inside the package", found,
                      "packages hold only regular files at relative paths; the entry was not read")


def collisions(view: PackageView) -> Iterator[Finding]:
    """Paths that differ only in case or Unicode normalisation: one would overwrite the other when
    the package is copied to macOS or Windows."""
    seen: dict[str, str] = {}
    for rel in sorted(view.files):
        key = unicodedata.normalize("NFC", rel).casefold()
        if key in seen:
            yield finding(rel, "path-collision", "", "a path unique ignoring case and Unicode normalisation",
                          f"same as {seen[key]}", "one of the two files would overwrite the other on macOS or "
                          "Windows: find out which one the package's authors meant")
        else:
            seen[key] = rel


def manifest(view: PackageView) -> Iterator[Finding]:
    listing = prepare(view)
    yield from listing.head
    if listing.listed is None:
        return
    files, listed = view.files, listing.listed
    for p, e in sorted(listed.items()):
        fs = files.get(p)
        if fs is None:
            yield finding(p, "file-missing", "", f"sha256 {e.sha256[:16]}…", "absent",
                          "a file the MANIFEST lists is not in the package")
        elif fs.sha256 != e.sha256:
            yield finding(p, "file-changed", "", f"sha256 {e.sha256}", f"sha256 {fs.sha256}",
                          "the file's content differs from what the MANIFEST recorded")
        elif fs.bytes != e.bytes:
            yield finding(p, "file-size-changed", "", f"{e.bytes} bytes", f"{fs.bytes} bytes")
    for p in sorted(set(files) - set(listed) - {MANIFEST_JSON, MANIFEST_CSV}):
        yield finding(p, "file-unlisted", "", "listed in MANIFEST.json", "not listed",
                      "a file the MANIFEST does not list: it was added or renamed after the MANIFEST was "
                      "written; find out where it came from")
    yield from listing.tail


@dataclass(frozen=True)
class _Listing:
    """What MANIFEST.json and MANIFEST.csv say, and their findings about themselves: all but the
    comparison with the files, which needs every file's hash (`prepare` works this out while the
    large files are still being read).  `listed` None: there is no MANIFEST.json to compare with."""

    head: tuple[Finding, ...]
    listed: dict[str, Entry] | None
    tail: tuple[Finding, ...]


def prepare(view: PackageView) -> _Listing:
    """The documents' part of the check, worked out once: early, once MANIFEST.json and MANIFEST.csv
    are in (`checks.prepare`), or when the check runs."""
    return view.memo("manifest_listing", lambda: _listing(view))


def _listing(view: PackageView) -> _Listing:
    head: list[Finding] = []
    parsed = view.document(MANIFEST_JSON)
    head += parsed.findings
    doc = parsed.value
    if MANIFEST_JSON not in view.files:
        head.append(finding(MANIFEST_JSON, "manifest-missing", "", "MANIFEST.json", "absent",
                            "the package has no MANIFEST.json: nothing records which files it should hold or their "
                            "hashes, so none can be proven unaltered; ask its authors for the MANIFEST they "
                            "published"))
    if doc is None:
        if MANIFEST_CSV not in view.files:
            head += manifest_csv(view, {})
        return _Listing(tuple(head), None, ())
    head += view.schema_findings(MANIFEST_JSON)
    listed: dict[str, Entry] = {}
    entries = doc.get("files") if isinstance(doc, dict) and isinstance(doc.get("files"), list) else []
    if not entries:
        head.append(finding(MANIFEST_JSON, "manifest-empty", "$.files", "at least one file", "none",
                            "an empty manifest proves nothing about the files beside it"))
    paths_in_order = []
    for i, e in enumerate(entries):
        if not isinstance(e, dict) or not isinstance(e.get("path"), str):
            continue
        p = e["path"]
        paths_in_order.append(p)
        why = unsafe_reason(p)
        if why:
            head.append(finding(MANIFEST_JSON, "manifest-unsafe-path", f"$.files[{i}].path",
                                "a relative path inside the package", p,
                                f"{why}: the entry is refused and never opened"))
            continue
        if p in listed:
            head.append(finding(MANIFEST_JSON, "manifest-duplicate-entry", f"$.files[{i}].path", "each path once", p))
            continue
        if p in (MANIFEST_JSON, MANIFEST_CSV):
            head.append(finding(MANIFEST_JSON, "manifest-lists-itself", f"$.files[{i}].path",
                                "no entry for the manifests", p))
            continue
        size = e.get("bytes")
        listed[p] = Entry(p, str(e.get("sha256", "")), size if isinstance(size, int) and not isinstance(size, bool)
                          else -1)
    if paths_in_order != sorted(paths_in_order):
        head.append(finding(MANIFEST_JSON, "manifest-unsorted", "$.files", "entries sorted by path", "another order"))
    tail: list[Finding] = []
    computed = root_hash(listed.values())
    if view.recorded_root != computed:
        tail.append(finding(MANIFEST_JSON, "manifest-root-mismatch", "$.root", computed, view.recorded_root,
                            "the root does not hash the entries listed: the MANIFEST was edited by hand"))
    tail += manifest_csv(view, listed)
    return _Listing(tuple(head), listed, tuple(tail))


def manifest_csv(view: PackageView, listed: dict[str, Entry]) -> Iterator[Finding]:
    table = view.table(MANIFEST_CSV)
    if table is None:
        yield finding(MANIFEST_CSV, "manifest-csv-missing", "", "MANIFEST.csv", "absent",
                      "SPEC section 9 ships the MANIFEST's entries also as CSV; this package lacks it")
        return
    yield from table.findings
    if not table.readable:
        return
    seen = {r.get("path", ""): (r.get("sha256", ""), r.get("bytes", "")) for _, r in table.rows}
    want = {p: (e.sha256, str(e.bytes)) for p, e in listed.items()}
    for p in sorted(set(want) | set(seen)):
        if want.get(p) != seen.get(p):
            yield finding(MANIFEST_CSV, "manifest-csv-mismatch", f"path {p}", want.get(p, "no entry"),
                          seen.get(p, "no entry"), "MANIFEST.csv and MANIFEST.json disagree about this file: "
                          "one of them was edited after they were written together")
