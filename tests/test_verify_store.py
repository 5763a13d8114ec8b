"""verify reads every byte through the store: strict JSON, UTF-8 text, one CSV reader, regular files only.

Each defect is a finding (exit 1) naming the file and, where there is one, the key or row;
never a crash, never a hang, never a link followed out of the package.
"""

from __future__ import annotations

import json
import os
import socket
import stat
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fixtures import pkgbuild  # noqa: E402
import auditkit.package.scan as scan_mod  # noqa: E402
from auditkit.cli import cli  # noqa: E402
from auditkit.package.manifest import build_manifest  # noqa: E402
from auditkit.verify import verify_package  # noqa: E402

LINUX = "remote-results/linux_s1_summary.csv"
RULES = "preanalysis/s1.rules.json"
DECISION = "analysis/s1_decision.json"


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    return pkgbuild.build(tmp_path_factory.mktemp("store") / "pkg", checkpoints=False)


@pytest.fixture
def pkg(base, tmp_path) -> Path:
    import shutil

    return Path(shutil.copytree(base, tmp_path / "pkg"))


def replace(pkg: Path, rel: str, old: bytes, new: bytes) -> None:
    p = pkg / rel
    data = p.read_bytes()
    assert old in data, (rel, old)
    p.write_bytes(data.replace(old, new, 1))
    build_manifest(pkg)


def findings(pkg: Path, path: str, code: str):
    r = verify_package(pkg)
    assert r.exit_code == 1, r.render_text()
    got = [f for f in r.findings if f.path == path and f.code == code]
    assert got, r.render_text()
    return got


# -- strict JSON -------------------------------------------------------------------------------

FROZEN = b'"frozen_at": "2026-05-01T09:00:00Z",'
JSON_CASES = [
    ("duplicate-frozen_at", RULES, FROZEN, FROZEN + b' "frozen_at": "2026-05-02T09:00:00Z",', "json-duplicate-key",
     "frozen_at"),
    ("nan", DECISION, b'"value": 0.01', b'"value": NaN', "json-non-finite", "].value"),
    ("infinity", RULES, b'"threshold": 0.05', b'"threshold": -Infinity', "json-non-finite", "].threshold"),
    ("overflow-decimal", DECISION, b'"mean": 1.51', b'"mean": 1' + b"9" * 400 + b".0", "json-non-finite", "].mean"),
    ("overflow-exponent", DECISION, b'"mean": 1.51', b'"mean": 1.5e999', "json-non-finite", "].mean"),
    ("long-integer", RULES, b'"top_k": 1', b'"top_k": 1' + b"0" * 5000, "json-number-too-long", "$.promote.top_k"),
    ("deep-nesting", RULES, b'"always_keep": []', b'"always_keep": ' + b"[" * 5000 + b"]" * 5000, "json-too-deep", ""),
    ("not-utf8", RULES, b"near_equivalence", b"near_\xe9quivalence", "text-not-utf8", "byte"),
    ("bom", "protocol.json", b"{", b"\xef\xbb\xbf{", "text-bom", ""),
    ("truncated", DECISION, b'"promoted"', b'"promoted', "json-invalid", "line"),
]


@pytest.mark.parametrize("rel,old,new,code,where", [c[1:] for c in JSON_CASES], ids=[c[0] for c in JSON_CASES])
def test_strict_json_defects_are_findings_naming_file_and_key(pkg, rel, old, new, code, where):
    replace(pkg, rel, old, new)
    f = findings(pkg, rel, code)[0]
    assert where in f.location or where in f.message


def test_a_duplicate_key_in_the_manifest_is_a_finding(pkg):
    p = pkg / "MANIFEST.json"
    p.write_text(p.read_text().replace('"root": ', '"root": "0", "root": ', 1))
    assert findings(pkg, "MANIFEST.json", "json-duplicate-key")[0].location == "root"


# -- CSV -------------------------------------------------------------------------------------

def test_csv_that_is_not_utf8(pkg):
    replace(pkg, LINUX, b"linux-s1-a-s1,", b"linux-s1-\xff-s1,")
    assert "byte" in findings(pkg, LINUX, "text-not-utf8")[0].location


def test_csv_that_does_not_parse(pkg):
    replace(pkg, LINUX, b"linux-s1-b-s1", b'"linux-s1-b-s1')
    findings(pkg, LINUX, "csv-unreadable")


def test_a_decimal_that_overflows_to_infinity(pkg):
    pkgbuild.set_cell(pkg / LINUX, 1, "val_bpb", "1" + "0" * 400 + ".5")
    build_manifest(pkg)
    f = findings(pkg, LINUX, "value-not-finite")
    assert [x.location for x in f] == ["row 1, column val_bpb"]


def test_a_decimal_with_many_digits_that_is_finite_is_no_finding(pkg):
    pkgbuild.set_cell(pkg / LINUX, 1, "val_bpb", "1." + "5" * 400)
    build_manifest(pkg)
    codes = {f.code for f in verify_package(pkg).findings}
    assert "value-not-finite" not in codes


def test_an_integer_too_long_to_parse(pkg):
    pkgbuild.set_cell(pkg / LINUX, 2, "seed", "1" + "0" * 5000)
    build_manifest(pkg)
    assert [x.location for x in findings(pkg, LINUX, "value-too-long")] == ["row 2, column seed"]


# -- the file system ----------------------------------------------------------------------------

def test_names_that_are_not_utf8_are_findings_not_crashes(pkg):
    raw = os.fsencode(pkg)
    with open(os.path.join(raw, b"README-\xff.txt"), "wb") as f:
        f.write(b"x")
    os.mkdir(os.path.join(raw, b"dir\xfe"))
    with open(os.path.join(raw, b"dir\xfe", b"a.txt"), "wb") as f:
        f.write(b"x")
    r = verify_package(pkg)
    assert {(f.path, f.code) for f in r.findings} == {("README-\\xff.txt", "name-not-utf8"),
                                                      ("dir\\xfe", "name-not-utf8")}
    out = CliRunner().invoke(cli, ["verify", str(pkg)])
    assert out.exit_code == 1 and "README-\\xff.txt: name-not-utf8" in out.output and "Traceback" not in out.output
    out = CliRunner().invoke(cli, ["verify", str(pkg), "--json"])
    assert out.exit_code == 1 and "README-\\xff.txt" in {f["path"] for f in json.loads(out.output)["findings"]}


def _device(p: Path) -> None:
    try:
        os.mknod(p, stat.S_IFCHR | 0o600, os.makedev(1, 3))  # /dev/null's numbers
    except PermissionError:
        pytest.skip("creating a device node needs CAP_MKNOD")


def _socket(p: Path) -> None:
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


def test_a_socket_is_planted_however_long_its_path(tmp_path):
    d = tmp_path / ("d" * 120)          # past AF_UNIX's ~100-byte limit for an absolute path
    d.mkdir()
    _socket(d / "special")
    assert stat.S_ISSOCK(os.lstat(d / "special").st_mode)


@pytest.mark.timeout(120)   # a hang guard (a FIFO opened would block for ever), not a speed limit
@pytest.mark.parametrize("make,kind", [(os.mkfifo, "a FIFO"), (_socket, "a socket"), (_device, "a device")],
                         ids=["fifo", "socket", "device"])
def test_special_files_are_refused_before_open(pkg, make, kind):
    make(pkg / "analysis" / "special")
    r = verify_package(pkg)       # opening a FIFO for reading would block here
    assert [(f.path, f.code, f.found) for f in r.findings] == [
        ("analysis/special", "special-file", f"{kind}, not a regular file")]


@pytest.mark.timeout(120)   # a hang guard (a FIFO opened would block for ever), not a speed limit
def test_a_fifo_swapped_in_after_the_listing_is_refused_not_waited_on(pkg, monkeypatch):
    real = scan_mod._walk

    def walk(root, out):
        yield from real(root, out)
        os.unlink(pkg / "README.txt")
        os.mkfifo(pkg / "README.txt")  # listed as a regular file, a FIFO by the time it is opened

    monkeypatch.setattr(scan_mod, "_walk", lambda root, out: list(walk(root, out)))
    r = verify_package(pkg, jobs=1)
    assert ("README.txt", "special-file") in {(f.path, f.code) for f in r.findings}


def test_a_directory_swapped_for_a_link_after_the_listing_is_not_followed(pkg, tmp_path, monkeypatch):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "linux_s1_summary.csv").write_bytes((pkg / LINUX).read_bytes())
    real = scan_mod._walk
    opened = []

    def walk(root, out):
        items = list(real(root, out))
        os.rename(pkg / "remote-results", tmp_path / "moved")
        os.symlink(outside, pkg / "remote-results")   # the path now leads out of the package
        return items

    real_open = os.open
    monkeypatch.setattr(os, "open", lambda p, *a, **k: opened.append(str(p)) or real_open(p, *a, **k))
    monkeypatch.setattr(scan_mod, "_walk", walk)
    r = verify_package(pkg, jobs=1)
    assert {(f.path, f.code) for f in r.findings if f.path.startswith("remote-results/")} >= {
        (LINUX, "symlink")}
    assert not any(str(outside) in p for p in opened)


def test_links_are_listed_never_followed(pkg, tmp_path):
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "key.json").write_text('{"a": 1, "a": 2}')
    os.symlink(secret, pkg / "analysis" / "linked-dir")
    os.symlink(secret / "key.json", pkg / "analysis" / "linked.json")
    r = verify_package(pkg)
    assert {(f.path, f.code) for f in r.findings} == {("analysis/linked-dir", "symlink"),
                                                      ("analysis/linked.json", "symlink")}


def test_verify_reads_each_file_through_the_store(pkg, monkeypatch):
    from auditkit.package.store import PackageStore

    opened = []
    real = PackageStore.open_fd   # `open` is this plus a file object
    monkeypatch.setattr(PackageStore, "open_fd", lambda self, rel: opened.append(rel) or real(self, rel))
    r = verify_package(pkg, jobs=2)
    files = sorted(p.relative_to(pkg).as_posix() for p in pkg.rglob("*") if p.is_file())
    assert r.ok and sorted(opened) == files and len(files) == r.checked["files"]


# -- the store's strict JSON takes json's own number parsing only where the hooks could not object ---------

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

NUMBER = st.builds(
    lambda sign, head, frac, exp: sign + head + (("." + frac) if frac else "") + exp,
    st.sampled_from(["", "-"]),
    st.one_of(st.just("0"), st.builds(lambda a, b: a + b, st.sampled_from("123456789"),
                                      st.text("0123456789", max_size=400))),
    st.text("0123456789", max_size=30),
    st.one_of(st.just(""), st.builds(lambda e, s, d: e + s + d, st.sampled_from("eE"), st.sampled_from(["", "+", "-"]),
                                     st.text("0123456789", min_size=1, max_size=5))))


@settings(max_examples=300, deadline=None)
@given(number=NUMBER, key=st.sampled_from(["val_bpb", "mean"]))
def test_strict_json_numbers_are_read_as_the_hooks_read_them(number, key):
    import json as json_mod

    from auditkit.errors import PackageDefect
    from auditkit.package import store

    text = f'{{"{key}": [{number}, "{number}"]}}'
    try:
        want = ("value", json_mod.loads(text, object_pairs_hook=store._pairs, parse_constant=store._constant,
                                        parse_float=store._float, parse_int=store._int))
    except store._Strict as exc:
        want = ("finding", exc.code)
    except ValueError:
        want = ("finding", "json-invalid")        # e.g. an integer beyond Python's digit limit
    try:
        got = ("value", store.loads_strict(text.encode(), "x.json"))
    except PackageDefect as exc:
        got = ("finding", exc.finding.code)
    assert got == want


@settings(max_examples=300, deadline=None)
@given(number=NUMBER, before=st.sampled_from(["[", "[ ", "[\n  ", '{"k":', '{"k": ', "[0,", "[0, "]),
       around=st.sampled_from(["{}", "sha-{}-hash", "9{}e", "x {}"]))
def test_the_number_shape_check_never_misses_a_number_the_hooks_refuse(number, before, around):
    """Wherever a number stands as a value, and whatever strings beside it hold (a hash with 9e786 in
    it, a number's text), the shape check sends the document to the hooks whenever they would refuse it."""
    import json as json_mod

    from auditkit.package import jsonscan, store

    closing = "}" if before.startswith("{") else "]"
    text = f'{before}{number}, "{around.format(number)}"{closing}' if closing == "]" else \
        f'{before}{number}, "s": "{around.format(number)}"{closing}'
    try:
        json_mod.loads(text, object_pairs_hook=store._pairs, parse_constant=store._constant,
                       parse_float=store._float, parse_int=store._int)
    except store._Strict:
        assert jsonscan.may_need_number_hooks(text.encode())
    except ValueError:
        pass


def test_hex_digests_do_not_send_a_document_to_the_slow_number_hooks():
    from auditkit.package import jsonscan

    digest = "311e4bcac14ea5b57bf1d37d92bda9de786a41fa1a898c1999e1cabd2c10f467"    # holds 9e786
    assert not jsonscan.may_need_number_hooks(f'{{"sha256": "{digest}", "value": 1.5e-05}}'.encode())
    assert jsonscan.may_need_number_hooks(f'{{"sha256": "{digest}", "value": 1.5e+305}}'.encode())


_JSON_TEXT = st.text(st.sampled_from(list('ab[]{}"\\:, ') + ["\u00e9"]), max_size=12)
_JSON_VALUE = st.recursive(
    st.one_of(st.none(), st.integers(-5, 5), _JSON_TEXT),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(_JSON_TEXT, inner, max_size=3)),
    max_leaves=40)


def _true_depth(v) -> int:
    if isinstance(v, list):
        return 1 + max((_true_depth(x) for x in v), default=0)
    if isinstance(v, dict):
        return 1 + max((_true_depth(x) for x in v.values()), default=0)
    return 0


@settings(max_examples=400, deadline=None)
@given(value=_JSON_VALUE, wrap=st.integers(0, 70), ascii_only=st.booleans())
def test_json_depth_counts_only_brackets_outside_strings(value, wrap, ascii_only):
    """`_json_depth` (brackets and quotes alone, escapes dropped) against the depth of the parsed value,
    for documents whose strings hold brackets, quotes and backslashes, nested past the limit or not."""
    import json as json_mod

    from auditkit.package import jsonscan

    doc = value
    for _ in range(wrap):
        doc = [doc]
    raw = json_mod.dumps(doc, ensure_ascii=ascii_only).encode("utf-8")
    want = _true_depth(doc)
    got = jsonscan.json_depth(raw)
    assert got == want if want <= jsonscan.MAX_JSON_DEPTH else got > jsonscan.MAX_JSON_DEPTH
