"""Merging host outputs: the run CSVs, checkpoints, rules and decisions of several hosts joined into one package.

`merge_packages(sources, into)` plans every write with nothing written (refusing the first
conflict), then stages and renames them all at once; sources are never changed.  The MANIFEST
is not rebuilt here: `protocol run` finalizes once every gate is decided.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from auditkit.errors import AuditError
from auditkit.package.manifest import MANIFEST_CSV, MANIFEST_JSON
from auditkit.package.rows import read_csv_text, write_csv_text
from auditkit.package.store import PackageStore
from auditkit.package.writes import write_files
from auditkit.study.signals import critical

def merge_packages(sources: list[Path], into: Path, log: Callable[[str], None] = lambda m: None) -> dict:
    """Join host outputs into `into` (created if needed); sources are never changed.

    Run CSVs are joined by run_id (a run_id with different contents is an
    error); checkpoints must agree byte for byte; frozen rules and decisions
    that differ only in `frozen_at`/`decided_at` keep the earliest; anything
    else that differs is an error that names the file.  The package MANIFEST
    is not rebuilt here: `protocol run` finalizes once every gate is decided.

    Atomic as far as a refusal goes: every source is checked against `into` and the
    others first, with nothing written; only then is each new file staged as a synced
    temporary beside its destination and the temporaries renamed into place.  A refused
    merge leaves `into` exactly as it was.
    """
    into = Path(into)
    plan = _MergePlan(into)
    for src in sources:
        plan.add_source(Path(src))
        log(f"checked {src}")
    _commit(into, plan.writes)
    log(f"merged {len(sources)} output(s) into {into}: {len(plan.writes)} file(s) written")
    return {"rows": plan.rows, "files": plan.files}


class _Ref:
    """A file of a source or of the target, read through that directory's store (no link followed)."""

    def __init__(self, store: PackageStore, rel: str):
        self.store, self.rel = store, rel

    def read(self) -> bytes:
        return self.store.read_bytes(self.rel, MAX_MERGED_FILE)


MAX_MERGED_FILE = 1 << 34   # a file is read whole to stage it; one larger than this is refused


class _MergePlan:
    """What a merge would write (path -> bytes, or the source file to copy), decided with
    nothing written; raises AuditError on the first conflict.  Sources and target are read
    through stores: a link, FIFO or device in either, or a link on the way to a file of the
    target, is refused, never followed."""

    def __init__(self, into: Path):
        self.into = into
        self.target = PackageStore(into) if os.path.isdir(into) else None
        self.writes: dict[str, bytes | _Ref] = {}
        self.rows = 0
        self.files = 0

    def _current(self, rel: str) -> bytes | _Ref | None:
        """The planned content of `rel` in the target: planned bytes or source, the file there, or None."""
        if rel in self.writes:
            return self.writes[rel]
        kind = self.target.kind(rel) if self.target is not None else None
        if kind in ("other", "dir"):
            raise AuditError(f"{rel} in the target is not a regular file (or lies under a link); nothing was merged",
                             path=str(self.into / rel),
                             hint="auditkit never writes through a link: remove it, or merge into a new directory")
        return _Ref(self.target, rel) if kind == "file" else None

    @staticmethod
    def _bytes(current: bytes | _Ref) -> bytes:
        return current if isinstance(current, bytes) else current.read()

    def _files(self, store: PackageStore, under: str = "") -> list[str]:
        """The regular files of a source (hidden entries and its MANIFEST left out); AuditError at
        a link or special file."""
        out = []
        for name, kind in store.listdir(under):
            rel = f"{under}/{name}" if under else name
            if name.startswith("."):
                continue
            if kind == "dir":
                out += self._files(store, rel)
            elif kind == "file":
                if rel not in (MANIFEST_JSON, MANIFEST_CSV):
                    out.append(rel)
            else:
                raise AuditError("symlink or special file in a host output; nothing was merged",
                                 path=str(store.root / rel), hint="a host output holds regular files only")
        return out

    def add_source(self, src: Path) -> None:
        if not os.path.isdir(src) or PackageStore(src).kind("protocol.json") != "file":
            raise AuditError("not a protocol output directory (no protocol.json)", path=str(src))
        if _inside(self.into, src) or _inside(src, self.into):
            raise AuditError("the merge target and a source overlap; sources are never changed", path=str(src),
                             hint="merge into a directory outside every source")
        store = PackageStore(src)
        for rel in self._files(store):
            p = _Ref(store, rel)
            if rel.startswith("remote-results/") and rel.endswith(".csv"):
                self._rows(p, rel)
            elif rel.startswith("preanalysis/") and rel.endswith(".rules.json"):
                self._timestamped(p, rel, "frozen_at")
            elif rel.startswith("analysis/") and rel.endswith("_decision.json"):
                self._timestamped(p, rel, "decided_at")
            elif rel.startswith("analysis/") or rel in ("README.txt", "table_manifest.json", "figure_manifest.json") \
                    or rel.startswith("figures/"):
                continue  # derived: regenerated when the merged study is finalized
            else:
                current = self._current(rel)
                if current is None:
                    self.writes[rel] = p
                    self.files += 1
                elif self._bytes(current) != p.read():
                    raise AuditError(f"{rel} differs between host outputs", path=str(src / rel),
                                     hint="host outputs of one study must share protocol, matrix and runner "
                                          "source; nothing was merged")

    def _rows(self, src: _Ref, rel: str) -> None:
        where = str(src.store.root / rel)
        header, new = _run_rows(src.read(), where)
        current = self._current(rel)
        old = _run_rows(self._bytes(current), rel)[1] if current is not None else []
        by_id = {r["run_id"]: r for r in old}
        added = 0
        for r in new:
            have = by_id.get(r["run_id"])
            if have is None:
                by_id[r["run_id"]] = r
                old.append(r)
                added += 1
            elif have != r:
                raise AuditError(f"run {r['run_id']} differs between host outputs", path=where,
                                 hint="two outputs recorded the same run differently; keep one of them; "
                                      "nothing was merged")
        if added:
            self.writes[rel] = write_csv_text(header, old).encode("utf-8")
            self.rows += added

    def _timestamped(self, src: _Ref, rel: str, key: str) -> None:
        where = str(src.store.root / rel)
        data = src.read()
        new = _stamped_object(data, where, key)
        current = self._current(rel)
        if current is None:
            self.writes[rel] = data
            self.files += 1
            return
        old = _stamped_object(self._bytes(current), rel, key)
        if {k: v for k, v in new.items() if k != key} != {k: v for k, v in old.items() if k != key}:
            raise AuditError(f"{Path(rel).name} differs between host outputs beyond {key}", path=where,
                             hint="the hosts froze or decided this gate differently; they cannot be merged; "
                                  "nothing was merged")
        if str(new[key]) < str(old[key]):
            self.writes[rel] = data
            self.files += 1


def _run_rows(data: bytes, where: str) -> tuple[list[str], list[dict[str, str]]]:
    """Header and rows of a run CSV to merge; AuditError naming the file when it is not UTF-8 CSV
    with a run_id column."""
    from auditkit.errors import PackageDefect
    from auditkit.package.store import decode_utf8

    try:
        text = decode_utf8(data, where)
    except PackageDefect as exc:
        raise AuditError(exc.finding.message, path=where, hint=f"{exc.hint}; nothing was merged") from None
    header, rows = read_csv_text(text, where)
    if "run_id" not in header:
        raise AuditError("a run CSV without a run_id column cannot be merged", path=where,
                         hint="rows are joined by run_id (docs/SPEC.md); nothing was merged")
    return header, rows


def _stamped_object(data: bytes, where: str, key: str) -> dict:
    """A rules or decision document to merge: a strict JSON object whose `key` is a string."""
    from auditkit.errors import PackageDefect
    from auditkit.package.store import loads_strict

    try:
        doc = loads_strict(data, where)
    except PackageDefect as exc:
        raise AuditError(exc.finding.message + (f" at {exc.finding.location}" if exc.finding.location else ""),
                         path=where, hint="rules and decisions are strict JSON objects; nothing was merged") from None
    if not isinstance(doc, dict) or not isinstance(doc.get(key), str):
        raise AuditError(f"not a JSON object with a {key} string (found {type(doc).__name__})", path=where,
                         hint="rules and decisions are JSON objects (docs/SPEC.md); nothing was merged")
    return doc


def _inside(path: Path, root: Path) -> bool:
    p, r = os.path.realpath(path), os.path.realpath(root)
    return p == r or p.startswith(r.rstrip(os.sep) + os.sep)


def _commit(into: Path, writes: dict[str, bytes | _Ref]) -> None:
    """Stage every write, then rename them all (`auditkit.package.writes`: nothing under `into`
    followed; a failure part way puts back what was there)."""
    files = {rel: content if isinstance(content, bytes) else content.read() for rel, content in sorted(writes.items())}
    with critical():
        write_files(into, files, force=True, what="protocol merge")
