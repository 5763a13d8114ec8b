"""Reading a package: directories and archives, one streaming pass, refusals and caps."""

from __future__ import annotations

import io
import json
import os
import sys
import tarfile
from pathlib import Path

import pytest
from click.testing import CliRunner

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fixtures import pkgbuild  # noqa: E402
import auditkit.package.scan as package  # noqa: E402
import auditkit.package.scanned as scanned  # noqa: E402
from auditkit.cli import cli  # noqa: E402
from auditkit.errors import AuditError  # noqa: E402
from auditkit.package.scan import scan_package, unsafe_reason  # noqa: E402
from auditkit.verify.orchestrate import verify_package  # noqa: E402


@pytest.fixture
def pkg(tmp_path) -> Path:
    return pkgbuild.build(tmp_path / "pkg")


def paths_with(report, code) -> set[str]:
    return {f.path for f in report.findings if f.code == code}


def make_tar(pkg: Path, out: Path, *, mode="w:gz", top="pkg", extra=(), dirs=True) -> Path:
    """`extra`: TarInfo-like tuples (name, data, type, linkname) appended after the package."""
    with tarfile.open(out, mode) as t:
        if dirs:
            t.add(pkg, arcname=top or ".")
        else:
            for p in sorted(pkg.rglob("*")):
                if p.is_file():
                    t.add(p, arcname=(f"{top}/" if top else "") + p.relative_to(pkg).as_posix())
        for name, data, typ, link in extra:
            info = tarfile.TarInfo(name)
            info.type = typ
            info.linkname = link
            info.size = len(data) if typ == tarfile.REGTYPE else 0
            t.addfile(info, io.BytesIO(data) if typ == tarfile.REGTYPE else None)
    return out


@pytest.mark.parametrize("name,why", [
    ("a/b.csv", None), ("./a", None), ("a/./b", None),
    ("", "empty"), ("/etc/passwd", "absolute"), ("C:/x", "absolute"), ("\\\\srv\\x", "absolute"),
    ("../x", "'..'"), ("a/../../x", "'..'"), ("a/..", "'..'"), ("a\\b", "backslash"), ("a\nb", "line break"),
    ("a\x00b", "NUL"),
])
def test_unsafe_reason(name, why):
    got = unsafe_reason(name)
    assert (got is None) if why is None else (why in got)


@pytest.mark.parametrize("suffix,mode", [(".tar", "w"), (".tar.gz", "w:gz"), (".tgz", "w:gz")])
def test_archives_verify_by_streaming_without_extracting(pkg, tmp_path, monkeypatch, suffix, mode):
    t = make_tar(pkg, tmp_path / f"p{suffix}", mode=mode)
    opened = []
    real_open = tarfile.open
    monkeypatch.setattr(tarfile, "open", lambda *a, **k: opened.append(k.get("mode")) or real_open(*a, **k))
    monkeypatch.setattr(tarfile.TarFile, "extract", lambda *a, **k: pytest.fail("extracted"))
    monkeypatch.setattr(tarfile.TarFile, "extractall", lambda *a, **k: pytest.fail("extracted"))
    before = sorted(os.listdir(tmp_path))
    r = verify_package(t)
    assert r.ok, r.render_text()
    assert opened == ["r|"]  # one forward pass over the stream auditkit decompresses (and budgets); never a seek
    assert sorted(os.listdir(tmp_path)) == before
    assert r.info["root (of the files)"] == json.loads((pkg / "MANIFEST.json").read_text())["root"]


@pytest.mark.parametrize("top,dirs", [("pkg", False), ("", True), ("", False)])
def test_archive_layouts(pkg, tmp_path, top, dirs):
    r = verify_package(make_tar(pkg, tmp_path / "p.tgz", top=top, dirs=dirs))
    assert r.ok, r.render_text()


def test_tampered_member_in_an_archive(pkg, tmp_path):
    (pkg / "README.txt").write_text("changed\n")
    r = verify_package(make_tar(pkg, tmp_path / "p.tar", mode="w"))
    assert paths_with(r, "file-changed") == {"README.txt"}


def test_archive_members_escaping_the_root(pkg, tmp_path):
    extra = [("../evil.txt", b"x", tarfile.REGTYPE, ""), ("/abs.txt", b"y", tarfile.REGTYPE, ""),
             ("pkg/../../up.txt", b"z", tarfile.REGTYPE, "")]
    t = make_tar(pkg, tmp_path / "evil.tgz", extra=extra)
    r = verify_package(t)
    assert paths_with(r, "unsafe-path") == {"../evil.txt", "/abs.txt", "pkg/../../up.txt"}
    assert not (tmp_path.parent / "evil.txt").exists() and not Path("/abs.txt").exists()
    res = CliRunner().invoke(cli, ["verify", str(t)])
    assert res.exit_code == 1 and "../evil.txt: unsafe-path" in res.output


def test_archive_links_and_special_members(pkg, tmp_path):
    extra = [("pkg/link", b"", tarfile.SYMTYPE, "/etc/passwd"), ("pkg/hard", b"", tarfile.LNKTYPE, "pkg/README.txt"),
             ("pkg/fifo", b"", tarfile.FIFOTYPE, ""), ("pkg/dev", b"", tarfile.CHRTYPE, "")]
    r = verify_package(make_tar(pkg, tmp_path / "p.tar", mode="w", extra=extra))
    assert paths_with(r, "symlink") == {"link", "hard"} and paths_with(r, "special-file") == {"fifo", "dev"}
    assert r.exit_code == 1


def test_duplicate_archive_member(pkg, tmp_path):
    r = verify_package(make_tar(pkg, tmp_path / "p.tar", mode="w",
                                extra=[("pkg/README.txt", b"second copy\n", tarfile.REGTYPE, "")]))
    assert paths_with(r, "archive-duplicate-member") == {"README.txt"}


def test_archive_caps(pkg, tmp_path, monkeypatch):
    t = make_tar(pkg, tmp_path / "p.tgz")
    with pytest.raises(AuditError, match="more than 5 members"):
        verify_package(t, max_members=5)
    with pytest.raises(AuditError, match="more than 1000 bytes"):
        verify_package(t, max_bytes=1000)
    r = CliRunner().invoke(cli, ["verify", str(t), "--max-members", "5", "--json"])
    assert r.exit_code == 2 and json.loads(r.output)["exit_code"] == 2 and "members" in json.loads(r.output)["error"]
    r = CliRunner().invoke(cli, ["verify", str(t), "--max-bytes", "1000"])
    assert r.exit_code == 2 and "Traceback" not in r.output and "bytes" in r.output
    monkeypatch.setenv("AUDITKIT_MAX_MEMBERS", "3")
    assert CliRunner().invoke(cli, ["verify", str(t)]).exit_code == 2
    monkeypatch.setenv("AUDITKIT_MAX_MEMBERS", "lots")
    r = CliRunner().invoke(cli, ["verify", str(t)])
    assert r.exit_code == 2 and "AUDITKIT_MAX_MEMBERS" in r.output
    monkeypatch.delenv("AUDITKIT_MAX_MEMBERS")
    monkeypatch.setenv("AUDITKIT_MAX_BYTES", "10")
    assert CliRunner().invoke(cli, ["verify", str(t)]).exit_code == 2


def test_a_truncated_or_corrupt_archive_is_exit_2(pkg, tmp_path):
    t = make_tar(pkg, tmp_path / "p.tgz")
    data = t.read_bytes()
    for name, blob in (("cut.tgz", data[: len(data) // 2]), ("junk.tgz", b"\x1f\x8b" + b"junk" * 100)):
        (tmp_path / name).write_bytes(blob)
        for extra in ([], ["--json"]):
            r = CliRunner().invoke(cli, ["verify", str(tmp_path / name), *extra])
            assert r.exit_code == 2 and "Traceback" not in r.output, r.output
            assert "archive" in r.output


def test_each_file_is_read_once(pkg, monkeypatch):
    seen = []
    real, real_doc = package.scan_file, package.scan_document
    monkeypatch.setattr(package, "scan_file", lambda rel, f, **k: seen.append(rel) or real(rel, f, **k))
    monkeypatch.setattr(package, "scan_document", lambda rel, *a, **k: seen.append(rel) or real_doc(rel, *a, **k))
    opened = []
    real_open = os.open
    monkeypatch.setattr(os, "open", lambda p, flags, *a, **k: opened.append((str(p), flags)) or
                        real_open(p, flags, *a, **k))
    scan = scan_package(pkg, jobs=2)
    assert sorted(seen) == sorted(scan.files) and len(seen) == len(set(seen)) == 11
    files = [p for p, flags in opened if not flags & getattr(os, "O_DIRECTORY", 0)]  # not the directories on the way
    assert len(files) == len(set(files)) == 11


def test_jobs_do_not_change_the_answer(pkg):
    (pkg / "README.txt").write_text("x\n")
    reports = [verify_package(pkg, jobs=j).to_dict() for j in (1, 2, 8)]
    assert reports[0] == reports[1] == reports[2]


def test_unsafe_file_names_in_a_directory(pkg):
    (pkg / "bad\nname.txt").write_text("x")
    (pkg / "back\\slash.txt").write_text("x")
    for d in ("C:", "a\\b", "line\rbreak", "ok/C:"):       # an unsafe directory makes the files under it unsafe
        (pkg / d / "deeper").mkdir(parents=True)
        (pkg / d / "deeper" / "f.txt").write_text("x")
    (pkg / "D:x.txt").write_text("x")                      # a drive-like name at the top only
    (pkg / "ok" / "E:x.txt").write_text("x")
    r = verify_package(pkg)
    assert paths_with(r, "unsafe-path") == {"bad\nname.txt", "back\\slash.txt", "C:/deeper/f.txt", "a\\b/deeper/f.txt",
                                            "line\rbreak/deeper/f.txt", "D:x.txt"}


def test_documents_too_large_fail_closed(pkg, monkeypatch):
    monkeypatch.setattr(scanned, "DOC_CAP", 100)
    r = verify_package(pkg)
    assert "remote-results/linux_s1_summary.csv" in paths_with(r, "document-too-large")
    assert r.exit_code == 1


def test_progress_only_for_large_packages(pkg):
    calls = []

    class Bar:
        def __init__(self):
            self.n = 0

        def update(self, k):
            self.n += k

        def close(self):
            pass

    bar = Bar()
    verify_package(pkg, progress_factory=lambda total: calls.append(total) or bar)
    total = sum(p.stat().st_size for p in pkg.rglob("*") if p.is_file())
    assert calls == [total] and bar.n == total


def test_documents_are_read_first_and_handed_over_once(pkg):
    calls = []

    def on_documents(scan):
        calls.append(sorted(scan.files))

    scan = scan_package(pkg, jobs=1, on_documents=on_documents)
    docs = sorted(p for p in scan.files if p.endswith((".json", ".csv")))
    assert calls == [docs]  # every document, nothing else yet (one reader: strict order)


def test_small_files_are_batched_in_order_and_large_ones_alone():
    from auditkit.package.scan import CHUNK, _batches
    items = [(f"f{i}", f"/x/f{i}", 10) for i in range(130)] + [("big", "/x/big", 10 * CHUNK), ("s", "/x/s", 1)]
    batches = _batches(items)
    assert [it for b in batches for it in b] == items          # every file once, order kept
    assert [len(b) for b in batches] == [64, 64, 2, 1, 1]
    assert all(sum(it[2] for it in b) <= 4 * CHUNK or len(b) == 1 for b in batches)


# -- reading in forked processes: the same answer, errors carried back, no process left behind ----------

def _damage(pkg: Path) -> None:
    (pkg / "README.txt").write_text("changed\n")
    (pkg / "extra.txt").write_text("x\n")
    (pkg / "source" / "snapshot").mkdir(parents=True)   # parsed where they are read: a reader, or here
    (pkg / "source" / "snapshot" / "dup.json").write_text('{"a": 1, "a": 2}')
    (pkg / "source" / "snapshot" / "nan.json").write_text('{"loss": [0.5, NaN]}')
    (pkg / "source" / "snapshot" / "fine.json").write_text('{"loss": [0.5]}')
    (pkg / "source" / "snapshot" / "log.csv").write_text("step,loss\n1,0.5\n")
    pkgbuild.set_cell(pkg / "remote-results/linux_s1_summary.csv", 1, "val_bpb", "nan")
    os.mkfifo(pkg / "pipe")
    os.symlink("README.txt", pkg / "link.txt")


def child_processes() -> set[str]:
    """This process's children now (running or not yet reaped), from /proc: each as its pid and
    command line (so that one another test left behind is not taken for a reader)."""
    task = Path("/proc/self/task")
    pids = {pid for tid in os.listdir(task) for pid in (task / tid / "children").read_text().split()}
    out = set()
    for pid in pids:
        try:
            out.add(f"{pid} {(Path('/proc') / pid / 'cmdline').read_bytes()!r}")
        except OSError:
            pass
    return out


@pytest.mark.timeout(30)
def test_processes_and_threads_give_the_same_report(pkg):
    _damage(pkg)
    before = child_processes()
    reports = [verify_package(pkg, jobs=j, processes=p).to_dict() for j in (1, 2) for p in (False, True)]
    assert all(r == reports[0] for r in reports), reports
    assert {"file-changed", "file-unlisted", "row-invalid", "special-file", "symlink", "json-duplicate-key",
            "json-non-finite"} <= set(reports[0]["counts"])
    assert child_processes() <= before


@pytest.mark.timeout(30)
def test_the_parent_takes_only_documents_from_the_queues_back_and_each_batch_is_read_once():
    """With a core to spare the parent reads from the back of the readers' queue, never a batch that
    is not documents (it never read another kind of file); every batch is read exactly once."""
    import time

    from auditkit.package import procread

    def read_one(item, progress):
        if item.endswith(".bin"):
            time.sleep(0.2)              # the reader is busy with the large files meanwhile
        return item

    batches = [["a.bin"], ["b.bin"], ["c.txt"]] + [[f"d{i}.json", f"e{i}.csv"] for i in range(30)]
    back, front = [], []
    with procread.Readers(batches, 1, read_one, None) as readers:
        while (j := readers.take_back(lambda b: all(r.endswith((".json", ".csv")) for r in b))) is not None:
            back.append(j)
        readers.collect(lambda i, results: front.append((i, results)))
    assert back and all(j >= 3 for j in back)                      # documents only, and some of them here
    assert sorted(back + [i for i, _ in front]) == list(range(len(batches)))   # each batch once
    assert all(results == batches[i] for i, results in front)


@pytest.mark.timeout(30)
def test_documents_are_handed_over_once_from_reader_processes(pkg):
    calls, started = [], []
    scan = scan_package(pkg, jobs=2, processes=True, on_documents=lambda s: calls.append(sorted(s.files)),
                        on_started=started.append)
    docs = sorted(p for p in scan.files if package.read_first(p))
    assert len(calls) == 1 and set(docs) <= set(calls[0]) and started == [True]


@pytest.mark.timeout(30)
def test_a_reader_process_that_fails_is_exit_2_and_leaves_nothing_running(pkg, monkeypatch):
    real = package.scan_file

    def failing(rel, f, **k):
        if rel.endswith(".safetensors"):
            raise OSError(5, "Input/output error")
        return real(rel, f, **k)

    monkeypatch.setattr(package, "scan_file", failing)   # inherited by the forked readers
    before = child_processes()
    with pytest.raises(AuditError, match="Input/output error"):
        verify_package(pkg, jobs=2, processes=True)
    assert child_processes() <= before


def test_large_packages_are_read_in_processes_small_ones_in_threads(pkg, monkeypatch):
    from auditkit.package import procread

    used = []
    real = procread.Readers.__enter__
    monkeypatch.setattr(procread.Readers, "__enter__", lambda self: used.append(True) or real(self))
    assert verify_package(pkg).ok and used == []
    monkeypatch.setattr(package, "PROCESS_MIN_BYTES", 1)
    assert verify_package(pkg).ok and used == [True]
    used.clear()
    import threading

    monkeypatch.setattr(threading, "active_count", lambda: 2)  # another thread runs: forking is not safe
    assert verify_package(pkg).ok and used == []


def test_a_reader_of_finite_checkpoints_never_imports_numpy_and_an_inf_still_counts(tmp_path):
    """Values are checked from their most significant bytes; numpy only counts a suspect chunk
    (an inf or nan, or a finite value of huge magnitude, which it then clears)."""
    import subprocess
    import sys

    import numpy as np
    from safetensors.numpy import save_file

    for name, values in (("fine", [0.5, -2.0, 1e30]), ("huge", [3e38, -3.3e38, 1.0]),
                         ("inf", [1.0, np.inf, np.nan])):
        d = tmp_path / name
        d.mkdir()
        (d / "protocol.json").write_text("{}")
        save_file({"w": np.array(values * 1000, dtype=np.float32),
                   "h": np.array(values * 10 if name == "inf" else [0.5, -2.0, 6e4] * 10, dtype=np.float16)},
                  str(d / "c.safetensors"))
    code = ("import sys\nfrom auditkit.package.scan import scan_package\n"
            "s = scan_package(sys.argv[1], jobs=1, processes=False).files['c.safetensors'].checkpoint\n"
            "print(sorted(p[0] for p in s.problems), 'numpy' in sys.modules)")
    out = {name: subprocess.run([sys.executable, "-c", code, str(tmp_path / name)], capture_output=True,
                                text=True, check=True).stdout.split("\n")[0] for name in ("fine", "huge", "inf")}
    assert out["fine"] == "[] False"
    assert out["huge"] == "[] True"      # suspect bytes: numpy counted, and found every value finite
    assert out["inf"] == "['checkpoint-nonfinite', 'checkpoint-nonfinite'] True"


@pytest.mark.timeout(30)
def test_a_reader_killed_by_a_signal_is_exit_2_naming_it_and_leaves_nothing_running(pkg, monkeypatch):
    import signal

    real = package.scan_file

    def killed(rel, f, **k):
        if rel.endswith(".safetensors"):
            os.kill(os.getpid(), signal.SIGKILL)   # in the forked reader: as the OOM killer would
        return real(rel, f, **k)

    monkeypatch.setattr(package, "scan_file", killed)
    before = child_processes()
    with pytest.raises(AuditError, match="ended without finishing its files .killed by SIGKILL"):
        verify_package(pkg, jobs=2, processes=True)
    assert child_processes() <= before


@pytest.mark.timeout(30)
def test_an_interrupt_while_readers_run_stops_and_reaps_them_at_once():
    import signal
    import time

    from auditkit.package import procread

    def interrupt(signum, frame):
        raise KeyboardInterrupt          # what Ctrl-C raises in the parent (the readers ignore SIGINT)

    before = child_processes()
    old = signal.signal(signal.SIGALRM, interrupt)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.3)
        with pytest.raises(KeyboardInterrupt):
            with procread.Readers([["a"], ["b"]], 2, lambda item, progress: time.sleep(60), None) as readers:
                readers.collect(lambda i, results: None)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    assert child_processes() <= before   # reaped, not left asleep for their 60 s (the marker's 30 s bound it)


def test_a_document_that_grows_while_it_is_read_is_read_whole_in_bounded_memory(tmp_path, monkeypatch):
    """fstat said N bytes but there are more (a writer appends): the document is read again in
    chunks, its hash and size are those of all it holds, and beyond DOC_CAP nothing is kept."""
    import hashlib

    path = tmp_path / "log.json"
    path.write_bytes(b'{"a": 1}')
    for size_said, cap in ((3, scanned.DOC_CAP), (8, scanned.DOC_CAP), (3, 4)):
        monkeypatch.setattr(scanned, "DOC_CAP", cap)
        fd = os.open(path, os.O_RDONLY)
        try:
            fs = package.scan_document("log.json", fd, size_said, parse=True)
        finally:
            os.close(fd)
        assert (fs.sha256, fs.bytes) == (hashlib.sha256(b'{"a": 1}').hexdigest(), 8)
        assert fs.content == (b'{"a": 1}' if cap > 8 else None)
        assert fs.parsed == (() if cap > 8 else None)


# -- a reader process hashes large files through mappings ------------------------------------------------

def _scan_both(path, rel, monkeypatch):
    from auditkit.package import scanned

    monkeypatch.setattr(scanned, "MAP_MIN", 1)
    monkeypatch.setattr(scanned, "MAP_WINDOW", 3 * 4096)         # several windows, the last one short
    out = []
    for mapped in (False, True):
        with open(path, "rb") as f:
            out.append(scanned.scan_file(rel, f, mapped=mapped))
    return out


@pytest.mark.parametrize("size", [1, 4095, 4096 * 3, 4096 * 7 + 5, (1 << 20) + 12345])
def test_a_mapped_read_hashes_and_counts_what_reads_do(tmp_path, monkeypatch, size):
    import hashlib

    data = os.urandom(size)
    (tmp_path / "blob.bin").write_bytes(data)
    read, mapped = _scan_both(tmp_path / "blob.bin", "blob.bin", monkeypatch)
    assert (mapped.sha256, mapped.bytes) == (read.sha256, read.bytes) == (hashlib.sha256(data).hexdigest(), size)


@pytest.mark.parametrize("values", [[0.5, -2.0, 1e30], [1.0, float("inf"), float("nan")]])
def test_a_mapped_checkpoint_is_checked_as_a_read_one_is(tmp_path, monkeypatch, values):
    import numpy as np
    from safetensors.numpy import save_file

    save_file({"w": np.array(values * 20000, dtype=np.float32), "b": np.zeros(777, dtype=np.float32)},
              str(tmp_path / "x.safetensors"), metadata={"run_id": "r"})
    read, mapped = _scan_both(tmp_path / "x.safetensors", "checkpoints/x.safetensors", monkeypatch)
    assert mapped.sha256 == read.sha256 and mapped.checkpoint == read.checkpoint and read.checkpoint is not None


def test_a_file_that_grows_while_mapped_is_hashed_whole(tmp_path, monkeypatch):
    import hashlib

    from auditkit.package import scanned

    path = tmp_path / "blob.bin"
    path.write_bytes(b"a" * 50000)
    real = scanned._hash_mapped

    def grow_first(fd, size, *rest):
        with open(path, "ab") as f:
            f.write(b"b" * 7000)       # written after the size was taken: the reads after the map find it
        return real(fd, size, *rest)

    monkeypatch.setattr(scanned, "MAP_MIN", 1)
    monkeypatch.setattr(scanned, "_hash_mapped", grow_first)
    with open(path, "rb") as f:
        got = scanned.scan_file("blob.bin", f, mapped=True)
    assert (got.sha256, got.bytes) == (hashlib.sha256(b"a" * 50000 + b"b" * 7000).hexdigest(), 57000)


def test_documents_and_unmapped_readers_never_map(tmp_path, monkeypatch):
    from auditkit.package import scanned

    monkeypatch.setattr(scanned, "MAP_MIN", 1)
    monkeypatch.setattr(scanned, "_hash_mapped", lambda *a: pytest.fail("mapped"))
    (tmp_path / "a.json").write_bytes(b"{}" * 5000)
    (tmp_path / "b.bin").write_bytes(b"x" * 5000)
    with open(tmp_path / "a.json", "rb") as f:
        assert scanned.scan_file("a.json", f, mapped=True).content == b"{}" * 5000
    with open(tmp_path / "b.bin", "rb") as f:
        assert scanned.scan_file("b.bin", f).bytes == 5000            # threads: reads only


@pytest.mark.timeout(30)
def test_a_reader_killed_by_a_file_that_shrank_under_its_mapping_is_exit_2_naming_why(tmp_path):
    """A mapped file truncated while it is read faults (SIGBUS) in the reader process alone; the command
    says so (AuditError, exit 2) and leaves nothing running."""
    import mmap

    from auditkit.package import procread

    path = tmp_path / "blob.bin"
    path.write_bytes(b"x" * (1 << 16))

    def read_one(item, progress):
        import faulthandler

        assert procread.in_worker()
        faulthandler.disable()   # (in the reader: pytest's would print the fault below as a "Fatal Python error")
        with open(path, "rb") as f:
            m = mmap.mmap(f.fileno(), 1 << 16, access=mmap.ACCESS_READ)
            os.truncate(path, 0)
            return m[(1 << 16) - 1]          # a page past the end of the file now

    with pytest.raises(AuditError) as exc:
        with procread.Readers([["blob.bin"]], 1, read_one, None) as readers:
            readers.collect(lambda i, r: None)
    assert "SIGBUS" in exc.value.message and "shrank" in exc.value.message
    assert not procread.in_worker()
