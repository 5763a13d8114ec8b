"""Hostile and unlucky input, through the command line: every case must end in a verdict.

Each case breaks a valid minimal package (tests/fixtures/pkgbuild.py) one way and
runs the commands that read it. For every command and case: exit 0/1/2 only
(never a traceback, never a hang: the per-test timeout is 10 s), not one byte
written into the package or the working directory. The commands that must see
the defect exit 1 (a finding) or 2 (could not check) and name the culprit.

Checkpoint and archive cases live in test_hostile_checkpoint.py and
test_hostile_archive.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest
from click.testing import CliRunner

from auditkit.cli import cli
from auditkit.package.manifest import build_manifest
from fixtures import pkgbuild

RULES = "preanalysis/s1.rules.json"
DECISION = "analysis/s1_decision.json"
LINUX = "remote-results/linux_s1_summary.csv"
WINDOWS = "remote-results/windows_s1_summary.csv"
MATRIX = "matrices/mini.csv"


# --- a digest of a tree that never opens anything but regular files -------------------

def tree_digest(root: Path) -> str:
    h = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(os.fsencode(root)):
        dirnames.sort()
        for name in sorted(filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]):
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            h.update(p + b"\0" + str(stat.S_IFMT(st.st_mode)).encode())
            if stat.S_ISREG(st.st_mode):
                with open(p, "rb") as f:
                    h.update(hashlib.sha256(f.read()).digest())
            elif stat.S_ISLNK(st.st_mode):
                h.update(os.readlink(p))
    return h.hexdigest()


# --- edits ---------------------------------------------------------------------------------

def text_edit(rel: str, old: str, new: str, *, manifest: bool = True):
    def edit(pkg: Path):
        p = pkg / rel
        t = p.read_text("utf-8")
        assert old in t, (rel, old)
        p.write_text(t.replace(old, new, 1), "utf-8")
        if manifest:
            build_manifest(pkg)
    return edit


def bytes_edit(rel: str, fn: Callable[[bytes], bytes], *, manifest: bool = True):
    def edit(pkg: Path):
        p = pkg / rel
        p.write_bytes(fn(p.read_bytes()))
        if manifest:
            build_manifest(pkg)
    return edit


def json_edit(rel: str, fn: Callable[[dict], None], *, manifest: bool = True):
    def edit(pkg: Path):
        p = pkg / rel
        doc = json.loads(p.read_text("utf-8"))
        fn(doc)
        p.write_text(json.dumps(doc, indent=2) + "\n", "utf-8")
        if manifest:
            build_manifest(pkg)
    return edit


def cell(rel: str, row: int, column: str, value: str, *, manifest: bool = True):
    def edit(pkg: Path):
        pkgbuild.set_cell(pkg / rel, row, column, value)
        if manifest:
            build_manifest(pkg)
    return edit


def replace_with(rel: str, make: Callable[[Path], None]):
    def edit(pkg: Path):
        (pkg / rel).unlink()
        make(pkg / rel)
    return edit


def symlink_to(target: str | Callable[[Path], str]):
    return lambda p: os.symlink(target(p) if callable(target) else target, p)


def fifo(p: Path) -> None:
    os.mkfifo(p)


def sock(p: Path) -> None:
    # bound by a relative name from its own directory: an AF_UNIX path is limited to about 100
    # bytes, which a long TMPDIR (macOS) and pytest's directories exceed
    s = socket.socket(socket.AF_UNIX)
    here = os.getcwd()
    os.chdir(p.parent)
    try:
        s.bind(p.name)
    finally:
        os.chdir(here)
        s.close()


def add(rel: str | bytes, make: Callable[[Path], None]):
    def edit(pkg: Path):
        p = Path(os.fsdecode(os.path.join(os.fsencode(pkg), rel.encode() if isinstance(rel, str) else rel)))
        make(p)
    return edit


def chain(*edits):
    def edit(pkg: Path):
        for e in edits:
            e(pkg)
    return edit


def rules_set(path: list, value, **kw):
    def fn(doc):
        d = doc
        for k in path[:-1]:
            d = d[k]
        d[path[-1]] = value
    return json_edit(RULES, fn, **kw)


# --- the cases ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Case:
    id: str
    edit: Callable[[Path], None]
    culprit: str                 # a path (or a word) the verdict must name
    must: str = "v"              # commands that must flag it: v verify, r replay-gate all
    also: str = ""               # commands that only must survive it (t tables --check, f figures --check)


DUP_FROZEN = '"frozen_at": "2026-05-01T09:00:00Z",'
CASES = [
    # filesystem
    Case("fs.csv-symlink-outside", replace_with(LINUX, symlink_to("/etc/passwd")), LINUX, "vr", "tf"),
    Case("fs.csv-symlink-inside", replace_with(LINUX, symlink_to("windows_s1_summary.csv")), LINUX, "vr", "tf"),
    Case("fs.rules-symlink", replace_with(RULES, symlink_to(lambda p: str(p.parent.parent / "README.txt"))), RULES,
         "vr", "t"),
    Case("fs.protocol-symlink", chain(lambda pkg: os.rename(pkg / "protocol.json", pkg / "p.json"),
                                      lambda pkg: os.symlink("p.json", pkg / "protocol.json")), "protocol.json", "vr",
         "tf"),
    Case("fs.dir-symlink", chain(lambda pkg: os.rename(pkg / "remote-results", pkg / "rr"),
                                 lambda pkg: os.symlink("rr", pkg / "remote-results")), "remote-results", "vr", "tf"),
    Case("fs.manifest-symlink", replace_with("MANIFEST.json", symlink_to("/etc/hostname")), "MANIFEST.json", "v"),
    Case("fs.csv-fifo", replace_with(LINUX, fifo), LINUX, "vr", "tf"),
    Case("fs.rules-fifo", replace_with(RULES, fifo), RULES, "vr", "t"),
    Case("fs.extra-fifo", add("remote-results/extra.csv", fifo), "extra.csv", "v"),
    Case("fs.extra-socket", add("analysis/s.sock", sock), "s.sock", "v"),
    Case("fs.non-utf8-name", add(b"README-\xff.txt", lambda p: p.write_bytes(b"x")), "README-", "v"),
    Case("fs.decision-is-dir", chain(lambda pkg: (pkg / DECISION).unlink(), lambda pkg: (pkg / DECISION).mkdir()),
         DECISION, "r"),
    Case("fs.csv-missing", lambda pkg: (pkg / LINUX).unlink(), LINUX, "vr"),
    Case("fs.unlisted-file", add("analysis/extra.txt", lambda p: p.write_text("x")), "extra.txt", "v"),
    # JSON
    Case("json.duplicate-frozen_at", text_edit(RULES, DUP_FROZEN, DUP_FROZEN + ' "frozen_at": "2026-05-02T09:00:00Z",'),
         RULES, "vr"),
    Case("json.duplicate-key-protocol", text_edit("protocol.json", '"name": "mini",', '"name": "mini", "name": "x",'),
         "protocol.json", "vr"),
    Case("json.duplicate-key-decision", text_edit(DECISION, '"gate": "s1",', '"gate": "s1", "gate": "s1",'), DECISION,
         "vr"),
    Case("json.nan-in-decision", text_edit(DECISION, '"value": 0.01', '"value": NaN'), DECISION, "r"),
    Case("json.infinity-threshold", text_edit(RULES, '"threshold": 0.05', '"threshold": Infinity'), RULES, "vr"),
    Case("json.overflow-threshold", text_edit(RULES, '"threshold": 0.05', '"threshold": 1' + "0" * 400 + ".5"),
         RULES, "vr"),
    Case("json.overflow-decision-mean", text_edit(DECISION, '"mean": 1.51', '"mean": 1' + "9" * 400 + ".0"), DECISION,
         "vr"),
    Case("json.huge-integer", text_edit(RULES, '"top_k": 1', '"top_k": 1' + "0" * 5000), RULES, "vr"),
    Case("json.deep-nesting", text_edit(RULES, '"always_keep": []', '"always_keep": ' + "[" * 5000 + "]" * 5000),
         RULES, "vr"),
    Case("json.not-utf8", bytes_edit(RULES, lambda b: b.replace(b'"mini"', b'"mini"').replace(b"near_equivalence",
                                                                                         b"near_\xe9quivalence")),
         RULES, "vr"),
    Case("json.bom", bytes_edit(RULES, lambda b: b"\xef\xbb\xbf" + b), RULES, "vr"),
    Case("json.utf16", bytes_edit(RULES, lambda b: b.decode().encode("utf-16")), RULES, "vr"),
    Case("json.truncated", bytes_edit(RULES, lambda b: b[: len(b) // 2]), RULES, "vr"),
    Case("json.top-level-array", bytes_edit(RULES, lambda b: b"[" + b + b"]"), RULES, "vr"),
    Case("json.protocol-not-utf8", bytes_edit("protocol.json", lambda b: b.replace(b'"mini"', b'"mi\xffni"')),
         "protocol.json", "vr"),
    Case("json.empty-file", bytes_edit(RULES, lambda b: b""), RULES, "vr"),
    # CSV
    Case("csv.bom", bytes_edit(LINUX, lambda b: b"\xef\xbb\xbf" + b), LINUX, "vr"),
    Case("csv.crlf", bytes_edit(LINUX, lambda b: b.replace(b"\n", b"\r\n")), LINUX, "v"),
    Case("csv.not-utf8", bytes_edit(LINUX, lambda b: b.replace(b"linux-s1-a-s1,", b"linux-s1-\xff-s1,", 1)), LINUX,
         "vr"),
    Case("csv.header-only", bytes_edit(LINUX, lambda b: b.split(b"\n")[0] + b"\n"), LINUX, "vr"),
    Case("csv.empty", bytes_edit(LINUX, lambda b: b""), LINUX, "vr"),
    Case("csv.missing-column", bytes_edit(LINUX, lambda b: re.sub(rb"(?m)^([^,\n]*),", b"", b)), LINUX, "vr"),
    Case("csv.duplicate-column", bytes_edit(LINUX, lambda b: b.replace(b"host,", b"seed,", 1)), LINUX, "vr"),
    Case("csv.extra-field", bytes_edit(LINUX, lambda b: b.replace(b"\n", b",x\n", 2)[:]), LINUX, "vr"),
    Case("csv.val_bpb-nan", cell(LINUX, 1, "val_bpb", "nan"), LINUX, "vr"),
    Case("csv.val_bpb-inf", cell(LINUX, 1, "val_bpb", "inf"), LINUX, "vr"),
    Case("csv.val_bpb-overflow", cell(LINUX, 1, "val_bpb", "1" + "0" * 400 + ".5"), LINUX, "vr"),
    Case("csv.val_bpb-newline", cell(LINUX, 1, "val_bpb", '"1.500000\n"'), LINUX, "vr"),
    Case("csv.val_bpb-hex", cell(LINUX, 1, "val_bpb", "0x1p0"), LINUX, "vr"),
    Case("csv.val_bpb-negative", cell(LINUX, 1, "val_bpb", "-1.5"), LINUX, "vr"),
    Case("csv.status-unknown", cell(LINUX, 1, "status", "crashed"), LINUX, "vr"),
    Case("csv.duplicate-run_id", cell(LINUX, 2, "run_id", "linux-s1-a-s1"), LINUX, "vr"),
    Case("csv.unterminated-quote", bytes_edit(LINUX, lambda b: b.replace(b"linux-s1-b-s1", b'"linux-s1-b-s1', 1)),
         LINUX, "vr"),
    Case("csv.nul-byte", bytes_edit(LINUX, lambda b: b.replace(b"linux-s1-a-s1", b"linux-s1-a\x00s1", 1)), LINUX,
         "vr"),
    Case("csv.started-after-finished", cell(LINUX, 1, "started_at", "2026-05-01T11:00:00Z"), LINUX, "v"),
    Case("csv.host-not-file-host", cell(LINUX, 1, "host", "windows"), LINUX, "vr"),
    Case("csv.config-not-in-matrix", cell(LINUX, 1, "config_id", "zzz"), LINUX, "vr"),
    Case("csv.seed-fraction", cell(LINUX, 1, "seed", "1.5"), LINUX, "vr"),
    Case("csv.timestamp-garbage", cell(LINUX, 1, "started_at", "yesterday"), LINUX, "vr"),
    Case("csv.timestamp-newline", cell(LINUX, 1, "finished_at", '"2026-05-01T10:00:30Z\n"'), LINUX, "v"),
    # schema edge values
    Case("schema.frozen_at-newline", rules_set(["frozen_at"], "2026-05-01T09:00:00Z\n"), RULES, "vr"),
    Case("schema.frozen_at-not-a-date", rules_set(["frozen_at"], "2026-13-45T99:00:00Z"), RULES, "vr"),
    Case("schema.top_k-zero", rules_set(["promote", "top_k"], 0), RULES, "vr"),
    Case("schema.top_k-bool", rules_set(["promote", "top_k"], True), RULES, "vr"),
    Case("schema.threshold-string", rules_set(["checks", 0, "threshold"], "0.05"), RULES, "vr"),
    Case("schema.unknown-key", rules_set(["surprise"], 1), RULES, "vr"),
    Case("schema.sha-uppercase", json_edit(DECISION, lambda d: d["rules"].update(sha256=d["rules"]["sha256"].upper())),
         DECISION, "r"),
    Case("schema.sha-newline", json_edit(DECISION, lambda d: d["rules"].update(sha256=d["rules"]["sha256"] + "\n")),
         DECISION, "r"),
    Case("schema.protocol-gate-missing-rules", json_edit("protocol.json", lambda d: d["gates"][0].pop("rules")),
         "protocol.json", "vr"),
    # rules and chains
    Case("rules.always_keep-not-candidate", rules_set(["promote", "always_keep"], ["zzz"]), RULES, "vr"),
    Case("rules.check-not-candidate", rules_set(["checks", 0, "candidate"], "zzz"), RULES, "vr"),
    Case("rules.frozen-after-data", rules_set(["frozen_at"], "2026-05-01T10:30:00Z"), RULES, "vr"),
    Case("rules.metric-unknown-column", rules_set(["metric", "column"], "nonexistent"), RULES, "vr"),
    Case("rules.promoted-by-missing-gate", rules_set(["inputs", "candidates"], "promoted-by:nope"), RULES, "vr"),
    Case("rules.promoted-by-self", rules_set(["inputs", "candidates"], "promoted-by:s1"), RULES, "vr"),
    Case("rules.changed-after-decision", rules_set(["promote", "top_k"], 2), RULES, "vr"),
    Case("decision.promoted-edited", json_edit(DECISION, lambda d: d.update(promoted=["b"])), DECISION, "r"),
    Case("decision.rank-edited", json_edit(DECISION, lambda d: d["candidates"][0].update(rank=2)), DECISION, "r"),
    Case("decision.check-flipped", json_edit(DECISION, lambda d: d["checks"][0].update(passed=False)), DECISION,
         "r"),
    Case("data.row-edited", cell(LINUX, 2, "val_bpb", "1.400000"), LINUX, "vr"),
    # manifest
    Case("manifest.missing", lambda pkg: (pkg / "MANIFEST.json").unlink(), "MANIFEST.json", "v"),
    Case("manifest.entry-dotdot", json_edit("MANIFEST.json", lambda d: d["files"][0].update(path="../x"),
                                            manifest=False), "MANIFEST.json", "v"),
    Case("manifest.duplicate-key", text_edit("MANIFEST.json", '"root": ', '"root": "0", "root": ', manifest=False),
         "MANIFEST.json", "v"),
    Case("manifest.csv-disagrees", bytes_edit("MANIFEST.csv", lambda b: b.replace(b"README.txt", b"README.TXT"),
                                              manifest=False), "MANIFEST.csv", "v"),
]

assert len({c.id for c in CASES}) == len(CASES)


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    return pkgbuild.build(tmp_path_factory.mktemp("hostile") / "pkg", checkpoints=False)


def _copy(base: Path, dest: Path) -> Path:
    import shutil

    shutil.copytree(base, dest)
    return dest


COMMANDS = {
    "v": lambda pkg: ["verify", str(pkg)],
    "r": lambda pkg: ["replay-gate", "all", "--package", str(pkg)],
    "t": lambda pkg: ["tables", "--check", "--package", str(pkg)],
    "f": lambda pkg: ["figures", "--check", "--package", str(pkg)],
}


def test_the_base_package_holds(base, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for cmd in "vr":
        r = CliRunner().invoke(cli, COMMANDS[cmd](base))
        assert r.exit_code == 0, (cmd, r.output)


def test_there_are_at_least_sixty_kinds():
    assert len(CASES) >= 60
    assert {c.id.split(".")[0] for c in CASES} >= {"fs", "json", "csv", "schema", "rules", "manifest"}


@pytest.mark.timeout(120)   # a hang guard (a FIFO opened would block for ever), not a speed limit
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_input_gets_a_verdict(case, base, tmp_path, monkeypatch):
    pkg = _copy(base, tmp_path / "pkg")
    case.edit(pkg)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    before = (tree_digest(pkg), tree_digest(cwd))
    for cmd in case.must + case.also:
        r = CliRunner().invoke(cli, COMMANDS[cmd](pkg))
        out = r.output
        assert "Traceback" not in out and not isinstance(r.exception, Exception) or isinstance(r.exception,
                                                                                                SystemExit), \
            (cmd, out, r.exception)
        assert r.exit_code in (0, 1, 2), (cmd, r.exit_code, out)
        if cmd in case.must:
            assert r.exit_code in (1, 2), f"{cmd}: {case.id} passed unnoticed:\n{out}"
            assert case.culprit in out, f"{cmd}: the verdict does not name {case.culprit}:\n{out}"
        assert "bug in auditkit" not in out, (cmd, out)
    assert (tree_digest(pkg), tree_digest(cwd)) == before, "a command wrote into the package or the working directory"
