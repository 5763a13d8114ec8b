"""verify's parts: the view of a scanned package and the registry of checks over it.

Each check is a lazy generator over a read-only view (no I/O); each family finds its
own kind of defect; schema findings keep the failing keyword and the JSON path.
"""

from __future__ import annotations

import builtins
import inspect
import json
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fixtures import pkgbuild  # noqa: E402
from auditkit.package.manifest import build_manifest  # noqa: E402
from auditkit.package.scan import scan_package  # noqa: E402
from auditkit.verify import verify_package  # noqa: E402
from auditkit.verify.checks import CHECKS, iter_findings  # noqa: E402
from auditkit.verify.view import PackageView  # noqa: E402

LINUX = "remote-results/linux_s1_summary.csv"
RULES = "preanalysis/s1.rules.json"
DECISION = "analysis/s1_decision.json"
CKPT = "checkpoints/linux-s1-a-s1.safetensors"


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    return pkgbuild.build(tmp_path_factory.mktemp("checks") / "pkg")


@pytest.fixture
def pkg(base, tmp_path) -> Path:
    import shutil

    return Path(shutil.copytree(base, tmp_path / "pkg"))


def view_of(pkg: Path) -> PackageView:
    return PackageView(scan_package(pkg, jobs=1))


def edit_json(path: Path, fn) -> None:
    doc = json.loads(path.read_text())
    fn(doc)
    path.write_text(json.dumps(doc, indent=2) + "\n")


def test_the_registry_names_every_family_and_each_check_is_lazy():
    assert list(CHECKS) == ["manifest", "documents", "rows", "decisions", "evaluation", "evaldocs", "derived",
                           "checkpoints", "source"]
    for name, check in CHECKS.items():
        assert inspect.isgeneratorfunction(check), name


def test_a_whole_package_gives_no_finding_from_any_check(base):
    view = view_of(base)
    for name, check in CHECKS.items():
        assert list(check(view)) == [], name


# one defect per family; only that family's check sees it (the MANIFEST rebuilt, so the manifest check is quiet)
FAMILY_CASES = {
    "manifest": (lambda pkg: (pkg / "README.txt").write_text("changed\n"), "file-changed", False),
    "documents": (lambda pkg: edit_json(pkg / RULES, lambda d: d.pop("metric")), "schema-invalid", True),
    "rows": (lambda pkg: pkgbuild.set_cell(pkg / LINUX, 1, "host", "windows"), "host-mismatch", True),
    "decisions": (lambda pkg: edit_json(pkg / DECISION, lambda d: d["inputs"][0].update(sha256="0" * 64)),
                  "decision-input-hash", True),
    "derived": (lambda pkg: (pkg / "table_manifest.json").write_text(json.dumps(
        {"schema": "auditkit/tables/v1", "tables": [{"id": "t", "path": "analysis/t.csv", "kind": "stage_summary",
                                                      "inputs": [LINUX], "sha256": "0" * 64}]})), "derived-missing",
                True),
    "checkpoints": (lambda pkg: pkgbuild.set_cell(pkg / LINUX, 1, "num_params_M", "1.000000"), "num-params-mismatch",
                    True),
    "source": (lambda pkg: _snapshot(pkg, {"train.py": "print('a runner that did not run')\n"}), "runner-sha-mismatch",
               True),
}


def _snapshot(pkg: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (pkg / "source/runner" / name).parent.mkdir(parents=True, exist_ok=True)
        (pkg / "source/runner" / name).write_text(text)


@pytest.mark.parametrize("family", list(FAMILY_CASES))
def test_each_family_finds_its_own_defect(pkg, family):
    edit, code, rebuild = FAMILY_CASES[family]
    edit(pkg)
    if rebuild:
        build_manifest(pkg)
    view = view_of(pkg)
    by_family = {name: [f.code for f in check(view)] for name, check in CHECKS.items()}
    assert code in by_family[family], by_family
    assert all(code not in codes for name, codes in by_family.items() if name != family), by_family


def test_the_checks_read_only_the_view(pkg, monkeypatch):
    pkgbuild.set_cell(pkg / LINUX, 2, "val_bpb", "nan")
    build_manifest(pkg)
    view = view_of(pkg)
    from auditkit.verify.fastschema import warm
    import auditkit.runner.arch  # noqa: F401 - imports and schema files are not the checks' reads

    warm()

    def refuse(*a, **k):
        raise AssertionError("a check opened a file")

    monkeypatch.setattr(os, "open", refuse)
    monkeypatch.setattr(builtins, "open", refuse)
    found = list(iter_findings(view))
    assert {f.code for f in found} == {"row-invalid", "decision-input-hash"}


def test_order_of_the_checks_does_not_change_the_findings(pkg):
    pkgbuild.set_cell(pkg / LINUX, 1, "config_id", "ghost")
    (pkg / "extra.txt").write_text("x")
    edit_json(pkg / RULES, lambda d: d.update(frozen_at="yesterday"))
    forward = sorted(iter_findings(view_of(pkg)))
    backward = sorted(iter_findings(view_of(pkg), reversed(list(CHECKS))))
    assert forward == backward and len(forward) >= 3


def test_findings_come_lazily(pkg):
    for rel in ("README.txt", RULES, DECISION):
        (pkg / rel).write_text((pkg / rel).read_text() + " ")
    it = iter_findings(view_of(pkg))
    first = next(it)
    assert first.code == "file-changed"          # the rest is not computed until asked for
    assert len([first, *it]) >= 3


def test_schema_findings_keep_the_keyword_and_the_json_path(pkg):
    edit_json(pkg / RULES, lambda d: (d.update(frozen_at="yesterday"), d["promote"].update(top_k="1")))
    pkgbuild.set_cell(pkg / LINUX, 1, "status", "crashed")
    build_manifest(pkg)
    r = verify_package(pkg)
    got = {(f.path, f.location, f.expected) for f in r.findings if f.code in ("schema-invalid", "row-invalid")}
    assert (RULES, "$.frozen_at", "schema rules, keyword pattern at properties/frozen_at/pattern") in got
    assert (RULES, "$.promote.top_k", "schema rules, keyword type at properties/promote/properties/top_k/type") in got
    assert (LINUX, "row 1, column status", "a value following SPEC section 4 (enum)") in got


def test_the_view_parses_each_document_once_and_caches_it(pkg):
    view = view_of(pkg)
    assert view.document(RULES) is view.document(RULES)
    assert view.table(LINUX) is view.table(LINUX)
    assert view.configs == {"a", "b"} and view.stages == {"s1"}
    assert sorted(view.runs) == ["linux-s1-a-s1", "linux-s1-b-s1", "windows-s1-a-s1", "windows-s1-b-s1"]
    assert [ck for _, _, ck in view.named_checkpoints()] == [CKPT, "checkpoints/linux-s1-b-s1.safetensors"]
    with pytest.raises(TypeError):
        view.files["x"] = None  # read-only


def test_a_short_row_and_a_duplicated_column_are_findings(pkg):
    p = pkg / LINUX
    lines = p.read_text().splitlines()
    lines[1] = lines[1].rsplit(",", 2)[0]                     # the last two cells gone
    lines[0] = lines[0].replace("mfu_percent", "seed")         # a column named twice
    p.write_text("\n".join(lines) + "\n")
    build_manifest(pkg)
    codes = {f.code for f in verify_package(pkg).findings if f.path == LINUX}
    assert {"csv-missing-cells", "csv-duplicate-column"} <= codes


@pytest.mark.parametrize("value,keyword", [("2026-05-01T09:00:00Z\n", "pattern"), ("2026-13-45T99:00:00Z", "format"),
                                           ("2026-02-29T09:00:00Z", "format")])
def test_a_frozen_at_with_a_final_newline_or_no_real_date_is_a_finding(pkg, value, keyword):
    edit_json(pkg / RULES, lambda d: d.update(frozen_at=value))
    build_manifest(pkg)
    f = [f for f in verify_package(pkg).findings if f.code == "schema-invalid"]
    assert [(x.path, x.location) for x in f] == [(RULES, "$.frozen_at")] and f"keyword {keyword}" in f[0].expected


def test_a_run_row_value_with_a_final_newline_is_a_finding(pkg):
    import csv
    import io

    rows = list(csv.DictReader(io.StringIO((pkg / LINUX).read_text(), newline="")))
    rows[0]["val_bpb"] += "\n"                 # a quoted cell may hold a newline
    rows[1]["finished_at"] += "\n"
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    (pkg / LINUX).write_text(buf.getvalue())
    build_manifest(pkg)
    f = {(x.location, x.expected) for x in verify_package(pkg).findings if x.code == "row-invalid"}
    assert ("row 1, column val_bpb", "a value following SPEC section 4 (pattern)") in f
    assert ("row 2, column finished_at", "a value following SPEC section 4 (pattern)") in f


# -- the runner snapshot against the rows' runner_sha256 -----------------------------------------------

def _runner_package(pkg: Path) -> str:
    """Snapshot the real runner into source/runner/ and record its tree hash in every row."""
    import shutil

    import auditkit.runner as runner
    from auditkit.runner.arch import runner_tree_sha256

    src = Path(runner.__file__).parent
    (pkg / "source/runner").mkdir(parents=True)
    for p in src.glob("*.py"):
        shutil.copy(p, pkg / "source/runner" / p.name)
    sha = runner_tree_sha256(src)
    for rel in (LINUX, "remote-results/windows_s1_summary.csv"):
        for row in (1, 2):
            pkgbuild.set_cell(pkg / rel, row, "runner_sha256", sha)
    _refresh_decision(pkg)       # the decision records its inputs' hashes: the rows changed
    build_manifest(pkg)
    return sha


def _refresh_decision(pkg: Path) -> None:
    import hashlib

    def fn(d):
        for inp in d["inputs"]:
            inp["sha256"] = hashlib.sha256((pkg / inp["path"]).read_bytes()).hexdigest()
    edit_json(pkg / DECISION, fn)


@pytest.mark.parametrize("change", ["edit", "add", "remove"])
def test_a_changed_runner_snapshot_with_a_rebuilt_manifest_is_a_finding(pkg, change):
    sha = _runner_package(pkg)
    assert verify_package(pkg).ok
    snap = pkg / "source/runner"
    if change == "edit":
        (snap / "train.py").write_text((snap / "train.py").read_text() + "\n# changed\n")
    elif change == "add":
        (snap / "extra.py").write_text("x = 1\n")
    else:
        (snap / "optim.py").unlink()
    build_manifest(pkg)
    f = verify_package(pkg).findings
    assert {(x.path, x.code, x.location) for x in f} == {
        (LINUX, "runner-sha-mismatch", "row 1, column runner_sha256"),
        ("remote-results/windows_s1_summary.csv", "runner-sha-mismatch", "row 1, column runner_sha256")}
    assert all(x.found.startswith(sha) and "and 1 more row(s) of this file: 2" in x.found for x in f)


def test_files_the_tree_hash_leaves_out_do_not_count(pkg):
    _runner_package(pkg)
    (pkg / "source/runner/README.md").write_text("notes\n")
    (pkg / "source/runner/sub").mkdir()
    (pkg / "source/runner/sub/helper.py").write_text("y = 2\n")
    build_manifest(pkg)
    assert verify_package(pkg).ok


def test_the_snapshot_hash_is_the_runners_tree_hash(tmp_path):
    import auditkit.runner as runner
    from auditkit.runner.arch import runner_tree_sha256
    from auditkit.verify.checks.source import snapshot_sha256

    trees = {"real": None, "one": {"a.py": "1"}, "order": {"b.py": "2", "a.py": "1", "B.py": "3", "a_b.py": ""},
             "unicode": {"caf\u00e9.py": "x", "z.py": "y"}}
    for name, files in trees.items():
        root = tmp_path / name
        if files is None:
            import shutil

            shutil.copytree(Path(runner.__file__).parent, root / "source/runner",
                            ignore=shutil.ignore_patterns("__pycache__"))
        else:
            _snapshot(root, files)
        view = view_of(root)
        assert snapshot_sha256(view) == runner_tree_sha256(root / "source/runner"), name


def test_a_package_without_a_snapshot_is_not_checked(base):
    from auditkit.verify.checks.source import check

    assert list(check(view_of(base))) == []
