"""A package an earlier auditkit wrote keeps checking: the SPEC v1 package shipped at commit
e60219b verifies, replays, and passes `tables --check` and `figures --check`, although the table
and figure generators grew since (a `reason` column, robustness tables, rings and labels in the
figures).  Each table and figure is checked against the generator version that made it; what a
newer auditkit adds is information, not a finding.

The package is taken from the repository's own history (`git archive e60219b ancillary`): the
project's CI clones with full history, and a committed copy would add its 14.5 MB (checkpoints
included, which `verify` reads) to every checkout.  Without that commit the test fails and says
how to fetch it (it never skips).
"""

from __future__ import annotations

import json
import subprocess
import tarfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from auditkit.cli.main import cli
from auditkit.derived.figures import GENERATOR_VERSIONS as FIGURE_GENERATORS
from auditkit.derived.tables import GENERATOR_VERSIONS, TABLE_MANIFEST, table_files

REPO = Path(__file__).resolve().parents[1]
V1_COMMIT = "e60219b"
# tarfile's extraction filters came in Python 3.11.4 (Debian 12 ships 3.11.2); the archive is this
# repository's own history, made by `git archive`, so without them it is extracted as it is
SAFE_EXTRACT = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}


@pytest.fixture(scope="module")
def v1_package(tmp_path_factory) -> Path:
    ok = subprocess.run(["git", "-C", str(REPO), "cat-file", "-e", f"{V1_COMMIT}^{{commit}}"],
                        capture_output=True).returncode == 0
    assert ok, (f"commit {V1_COMMIT} (the SPEC v1 package) is not in this clone's history: "
                f"run `git fetch --unshallow` (CI clones with full history)")
    dest = tmp_path_factory.mktemp("v1")
    archive = subprocess.run(["git", "-C", str(REPO), "archive", "--format=tar", V1_COMMIT, "ancillary"],
                             capture_output=True, check=True).stdout
    tar = dest / "v1.tar"
    tar.write_bytes(archive)
    with tarfile.open(tar) as t:
        t.extractall(dest, **SAFE_EXTRACT)
    tar.unlink()
    return dest / "ancillary"


def _run(*args):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def _copy(src: Path, dest: Path) -> Path:
    import shutil

    shutil.copytree(src, dest)
    return dest


@pytest.mark.parametrize("args", [("verify", "{p}"), ("replay-gate", "all", "--package", "{p}"),
                                  ("tables", "--check", "--package", "{p}"),
                                  ("figures", "--check", "--package", "{p}")],
                         ids=["verify", "replay-gate", "tables", "figures"])
def test_the_v1_package_passes_every_check(v1_package, args):
    r = _run(*[a.format(p=v1_package) for a in args])
    assert r.exit_code == 0, r.output
    assert "OK:" in r.output


def test_tables_a_newer_auditkit_adds_are_information(v1_package):
    r = _run("tables", "--check", "--package", str(v1_package), "--json")
    doc = json.loads(r.output)
    assert r.exit_code == 0 and doc["findings"] == []
    added = doc["info"]["tables_a_newer_auditkit_adds_not_checked"]
    assert "analysis/robustness.csv" in added and "analysis/promotion_survival.csv" not in added


def test_an_edited_v1_table_is_still_found_at_its_row(v1_package, tmp_path):
    pkg = _copy(v1_package, tmp_path / "p")
    csv = pkg / "analysis" / "promotion_survival.csv"
    lines = csv.read_text().split("\n")
    lines[2] = lines[2].replace("eliminated", "promoted", 1) if "eliminated" in lines[2] else lines[2] + "x"
    csv.write_text("\n".join(lines))
    r = _run("tables", "--check", "--package", str(pkg))
    assert r.exit_code == 1
    assert "analysis/promotion_survival.csv [row 2, column outcome]: table-differs" in r.output, r.output


def test_a_v1_table_removed_from_its_manifest_is_a_finding(v1_package, tmp_path):
    pkg = _copy(v1_package, tmp_path / "p")
    man = json.loads((pkg / TABLE_MANIFEST).read_text())
    man["tables"] = [e for e in man["tables"] if e["path"] != "analysis/stage_summary.csv"]
    (pkg / TABLE_MANIFEST).write_text(json.dumps(man))
    r = _run("tables", "--check", "--package", str(pkg))
    assert r.exit_code == 1
    assert "table-not-listed" in r.output and "analysis/stage_summary.csv" in r.output


def test_a_generator_version_this_auditkit_lacks_is_named(v1_package, tmp_path):
    pkg = _copy(v1_package, tmp_path / "p")
    man = json.loads((pkg / TABLE_MANIFEST).read_text())
    man["tables"][0]["generator"] = 99
    (pkg / TABLE_MANIFEST).write_text(json.dumps(man))
    r = _run("tables", "--check", "--package", str(pkg))
    assert r.exit_code == 1
    assert "[$.tables[0].generator]: table-generator-unknown" in r.output, r.output


def test_a_v1_figure_with_other_data_is_still_found(v1_package, tmp_path):
    pkg = _copy(v1_package, tmp_path / "p")
    man = json.loads((pkg / "figure_manifest.json").read_text())
    for e in man["figures"]:
        if e["id"] == "rank_across_gates":
            e["data_sha256"] = "0" * 64
    (pkg / "figure_manifest.json").write_text(json.dumps(man))
    r = _run("figures", "--check", "--package", str(pkg))
    assert r.exit_code == 1
    assert "figures/rank_across_gates.png: figure-data-differs" in r.output


def test_regenerating_a_v1_package_gives_its_own_tables_byte_for_byte(v1_package):
    entries, files = table_files(v1_package)
    assert files[TABLE_MANIFEST] == (v1_package / TABLE_MANIFEST).read_bytes()
    assert all((v1_package / rel).read_bytes() == data for rel, data in files.items())
    assert not any(rel.startswith("analysis/robustness") for rel in files)


def test_new_manifests_record_each_generator_version(v1_package):
    entries, files = table_files(v1_package, as_recorded=False)
    doc = json.loads(files[TABLE_MANIFEST])
    assert doc["generators"] == GENERATOR_VERSIONS
    assert {e["generator"] for e in entries if e["kind"] == "promotion_survival"} == {2}
    assert any(e["path"] == "analysis/robustness.csv" for e in entries)
    assert FIGURE_GENERATORS["rank_across_gates"] == 2


RETIRED_COMMIT = "e0f2761"   # the package shipped before the robustness statistics were corrected


def test_tables_of_a_retired_generator_are_information_not_a_match(tmp_path):
    """The reference package of e0f2761 lists robustness tables made by generator 1, whose statistics
    were wrong (noise drawn per candidate, cells resampled unstratified).  `tables --check` does not
    rerun it: those tables are reported as not checked, with the reason; every other table is still
    checked, and an edit to one of them is still found."""
    ok = subprocess.run(["git", "-C", str(REPO), "cat-file", "-e", f"{RETIRED_COMMIT}^{{commit}}"],
                        capture_output=True).returncode == 0
    assert ok, f"commit {RETIRED_COMMIT} is not in this clone's history: run `git fetch --unshallow`"
    parts = ["analysis", "remote-results", "matrices", "preanalysis", "protocol.json", "table_manifest.json"]
    archive = subprocess.run(["git", "-C", str(REPO), "archive", "--format=tar", RETIRED_COMMIT,
                              *[f"ancillary/{p}" for p in parts]], capture_output=True, check=True).stdout
    (tmp_path / "a.tar").write_bytes(archive)
    with tarfile.open(tmp_path / "a.tar") as t:
        t.extractall(tmp_path, **SAFE_EXTRACT)
    pkg = tmp_path / "ancillary"
    r = _run("tables", "--check", "--package", str(pkg), "--json")
    doc = json.loads(r.output)
    assert r.exit_code == 0 and doc["findings"] == [], r.output
    retired = [v for k, v in doc["info"].items() if k.startswith("tables_of_a_retired_generator")]
    assert len(retired) == 1 and "analysis/robustness_checks.csv" in retired[0]
    assert "analysis/stage_summary.csv" not in retired[0]
    summary = pkg / "analysis" / "stage_summary.csv"
    lines = summary.read_text().split("\n")
    lines[1] = lines[1].replace(lines[1].split(",")[-1], "9.999999")
    summary.write_text("\n".join(lines))
    r = _run("tables", "--check", "--package", str(pkg), "--json")
    assert r.exit_code == 1 and any(f["path"] == "analysis/stage_summary.csv" for f in json.loads(r.output)["findings"])
