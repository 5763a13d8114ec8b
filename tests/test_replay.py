"""Replay (`auditkit replay-gate`, `decide`): every kind of tampering is caught, exit codes exact."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from auditkit.cli import cli
from auditkit.errors import AuditError
from auditkit.package.manifest import build_manifest
from auditkit.gates.replay import decide_gate, decision_text, gate_inputs, replay_all, replay_gate
from fixtures.synth import make_package


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    return make_package(tmp_path_factory.mktemp("synth") / "pkg", tables=False)


@pytest.fixture
def pkg(pristine, tmp_path) -> Path:
    dest = tmp_path / "pkg"
    shutil.copytree(pristine, dest)
    return dest


def load(p: Path) -> dict:
    return json.loads(p.read_text())


def dump(p: Path, doc: dict) -> None:
    p.write_text(json.dumps(doc, indent=2) + "\n")


def codes(replays) -> set[str]:
    return {f.code for r in replays for f in r.findings}


def run(*args):
    return CliRunner().invoke(cli, list(args))


def csv_rows(p: Path) -> list[list[str]]:
    return [line.split(",") for line in p.read_text().splitlines()]


def write_rows(p: Path, rows: list[list[str]]) -> None:
    p.write_text("\n".join(",".join(r) for r in rows) + "\n")


# --------------------------------------------------------------------------- clean

def test_pristine_package_replays_identically(pkg):
    replays = replay_all(pkg)
    assert [r.gate for r in replays] == ["screen", "confirm", "final"]
    assert all(r.identical for r in replays), [str(f) for r in replays for f in r.findings]


def test_cli_replay_all_identical(pkg):
    res = run("replay-gate", "all", "--package", str(pkg), "-v")
    assert res.exit_code == 0, res.output
    assert "verdict: identical — gate screen replays to its recorded decision" in res.output
    assert "check near_equivalence greedy vs bridge: " in res.output
    assert "promoted (*): " in res.output
    assert res.output.rstrip().endswith("OK: replay-gate " + str(pkg) + " (3 gates)")


def test_cli_replay_json(pkg):
    res = run("replay-gate", "confirm", "--package", str(pkg), "--json")
    assert res.exit_code == 0
    doc = json.loads(res.output)
    assert doc["ok"] is True and doc["info"]["gate_confirm"] == "identical"
    assert set(doc["info"]) == {"gate_confirm", "freeze_evidence"}  # SPEC v1.1: per gate, the freeze evidence
    assert doc["info"]["freeze_evidence"]["confirm"]["level"] == "asserted"


def test_decide_gate_needs_no_manifest_and_no_tables(tmp_path):
    p = make_package(tmp_path / "bare", tables=False, manifest=False)
    assert not (p / "MANIFEST.json").exists() and not (p / "table_manifest.json").exists()
    doc = decide_gate(p, "confirm", "2026-05-02T12:00:00Z")
    assert doc == load(p / "analysis/confirm_decision.json")
    assert [i["path"] for i in doc["inputs"]] == gate_inputs(p, load(p / "preanalysis/confirm.rules.json"))


# --------------------------------------------------------------------------- tampering

def test_changed_val_bpb_that_flips_a_rank(pkg):
    csv = pkg / "remote-results/linux_screen_summary.csv"
    rows = csv_rows(csv)
    col = rows[0].index("val_bpb")
    target = next(r for r in rows[1:] if r[rows[0].index("config_id")] == "greedy")
    target[col] = "1.000000"  # greedy now first in that cell
    write_rows(csv, rows)
    build_manifest(pkg)  # the manifest agrees with the edited file: only replay can see it
    r = replay_gate(pkg, "screen")
    assert {"input-hash-mismatch", "rank-differs", "value-differs"} <= {f.code for f in r.findings}
    rank = [f for f in r.findings if f.code == "rank-differs" and f.location.endswith(".rank")
            and "cells" in f.location and "greedy" not in f.location]
    assert rank, [str(f) for f in r.findings]
    res = run("replay-gate", "screen", "--package", str(pkg))
    assert res.exit_code == 1
    assert "verdict: DIFFERS" in res.output
    # a replay finding says which value is the package's and which the raw rows give
    value = next(f for f in r.findings if f.code == "value-differs")
    assert f"(recorded {value.found}; replayed {value.expected})" in str(value)
    assert "(expected " not in str(value) and f"recorded {value.found}; replayed {value.expected}" in res.output
    doc = json.loads(run("replay-gate", "screen", "--package", str(pkg), "--json").output)
    (as_json,) = [f for f in doc["findings"] if f["code"] == "value-differs" and f["location"] == value.location]
    assert (as_json["recorded"], as_json["replayed"]) == (value.found, value.expected) == (as_json["found"],
                                                                                             as_json["expected"])


def test_threshold_edited_after_the_decision(pkg):
    p = pkg / "preanalysis/screen.rules.json"
    doc = load(p)
    doc["checks"][0]["threshold"] = 0.5
    dump(p, doc)
    r = replay_gate(pkg, "screen")
    found = {(f.code, f.location) for f in r.findings}
    assert ("rules-hash-mismatch", "$.rules.sha256") in found
    assert ("check-value-differs", "$.checks[0].threshold") in found
    assert ("check-outcome-differs", "$.checks[0].passed") in found


def test_rules_frozen_after_the_data(pkg):
    p = pkg / "preanalysis/confirm.rules.json"
    doc = load(p)
    doc["frozen_at"] = "2026-06-01T00:00:00Z"
    dump(p, doc)
    dec = pkg / "analysis/confirm_decision.json"
    dec.write_text(decision_text(decide_gate(pkg, "confirm", load(dec)["decided_at"])))  # hashes agree again
    r = replay_gate(pkg, "confirm")
    assert [f.code for f in r.findings] == ["rules-frozen-after-data"]
    assert "is not before" in r.findings[0].found and "row 1" in r.findings[0].found


def test_frozen_at_with_fractional_seconds_compares_as_time(pkg):
    p = pkg / "preanalysis/screen.rules.json"
    doc = load(p)
    first_start = csv_rows(pkg / "remote-results/linux_screen_summary.csv")[1][16]
    doc["frozen_at"] = first_start.replace("Z", ".5Z")  # half a second after the first row started
    dump(p, doc)
    dec = pkg / "analysis/screen_decision.json"
    dec.write_text(decision_text(decide_gate(pkg, "screen", load(dec)["decided_at"])))
    assert "rules-frozen-after-data" in {f.code for f in replay_gate(pkg, "screen").findings}


def test_decision_promoting_what_its_rules_would_not(pkg):
    p = pkg / "analysis/final_decision.json"
    doc = load(p)
    doc["promoted"] = [doc["candidates"][1]["config_id"]]
    dump(p, doc)
    r = replay_gate(pkg, "final")
    assert [(f.code, f.location) for f in r.findings] == [("promoted-differs", "$.promoted")]
    res = run("replay-gate", "final", "--package", str(pkg))
    assert res.exit_code == 1 and "promoted-differs" in res.output


def test_swapped_input_file(pkg):
    p = pkg / "analysis/screen_decision.json"
    doc = load(p)
    doc["inputs"][0]["path"] = "remote-results/linux_confirm_summary.csv"
    dump(p, doc)
    found = {f.code for f in replay_gate(pkg, "screen").findings}
    assert {"input-extra", "input-not-recorded"} <= found


def test_swapped_input_contents(pkg):
    shutil.copyfile(pkg / "remote-results/windows_final_summary.csv", pkg / "remote-results/linux_final_summary.csv")
    found = {f.code for f in replay_gate(pkg, "final").findings}
    assert "input-hash-mismatch" in found


def test_promoted_list_that_breaks_the_chain(pkg):
    p = pkg / "analysis/screen_decision.json"
    doc = load(p)
    doc["promoted"] = doc["promoted"][:-1]
    dump(p, doc)
    by_gate = {r.gate: {f.code for f in r.findings} for r in replay_all(pkg)}
    assert "promoted-differs" in by_gate["screen"]
    assert "chain-broken" in by_gate["confirm"]


def test_chain_broken_on_replay_only(pkg):
    # screen's recorded promoted list and confirm agree, but screen's rows no longer give that list
    csv = pkg / "remote-results/windows_screen_summary.csv"
    rows = csv_rows(csv)
    promoted = load(pkg / "analysis/screen_decision.json")["promoted"]
    out = [r for r in rows[1:] if r[4] == promoted[-1]]
    for r in out:
        r[rows[0].index("val_bpb")] = "9.000000"
    write_rows(csv, rows)
    by_gate = {r.gate: {f.code for f in r.findings} for r in replay_all(pkg)}
    assert "chain-broken-on-replay" in by_gate["confirm"]


def test_duplicate_row_is_a_finding_naming_file_and_rows(pkg):
    csv = pkg / "remote-results/linux_final_summary.csv"
    rows = csv_rows(csv)
    dup = list(rows[1])
    dup[0] = dup[0] + "-again"
    write_rows(csv, rows + [dup])
    r = replay_gate(pkg, "final")
    f = next(f for f in r.findings if f.code == "duplicate-run-row")
    assert f.path == "remote-results/linux_final_summary.csv"
    assert "row 1" in f.location and f"row {len(rows)}" in f.location


def test_missing_input_file(pkg):
    (pkg / "remote-results/windows_confirm_summary.csv").unlink()
    found = {f.code for f in replay_gate(pkg, "confirm").findings}
    assert "input-missing" in found


# --------------------------------------------------------------------------- cannot run: exit 2

def test_unknown_gate_names_the_gates(pkg):
    res = run("replay-gate", "stage9", "--package", str(pkg))
    assert res.exit_code == 2
    assert "unknown gate 'stage9'" in res.output and "screen, confirm, final" in res.output
    with pytest.raises(AuditError):
        replay_gate(pkg, "stage9")


def test_missing_package_and_unreadable_protocol(tmp_path, pkg):
    res = run("replay-gate", "all", "--package", str(tmp_path / "nope"))
    assert res.exit_code == 2 and "no such file or directory" in res.output       # not "no protocol.json"
    (tmp_path / "empty").mkdir()
    res = run("replay-gate", "all", "--package", str(tmp_path / "empty"))
    assert res.exit_code == 2 and "not a package: this directory holds neither" in res.output
    # a damaged protocol.json: nothing to replay (exit 2), the file and the defect named; it is
    # verify's finding about the package (exit 1)
    (pkg / "protocol.json").write_text("{not json")
    res = run("replay-gate", "all", "--package", str(pkg), "--json")
    doc = json.loads(res.output)
    assert res.exit_code == 2 and doc["exit_code"] == 2
    assert doc["path"] == str(pkg / "protocol.json") and "protocol.json [line 1, column 2]: json-invalid" in doc["error"]
    assert "auditkit verify" in doc["hint"]


def test_trailing_garbage_in_protocol_json_is_verify_finding_and_stops_replay(pkg):
    p = pkg / "protocol.json"
    p.write_bytes(p.read_bytes() + b"garbage")
    res = run("verify", str(pkg), "--json")
    doc = json.loads(res.output)
    assert res.exit_code == 1 and doc["exit_code"] == 1, res.output
    assert ("protocol.json", "json-invalid") in {(f["path"], f["code"]) for f in doc["findings"]}
    res = run("replay-gate", "all", "--package", str(pkg))
    assert res.exit_code == 2 and "cannot replay without a usable protocol.json" in res.output
    assert "json-invalid: not valid JSON: Extra data" in res.output and "a bug" not in res.output


# --------------------------------------------------------------------------- decide

def test_decide_refuses_to_overwrite_evidence(pkg):
    before = (pkg / "analysis/screen_decision.json").read_bytes()
    res = run("decide", "screen", "--package", str(pkg))
    assert res.exit_code == 2
    assert "the recorded decision is evidence" in res.output and "--force" in res.output
    assert (pkg / "analysis/screen_decision.json").read_bytes() == before


def test_decide_writes_and_force_overwrites(pkg):
    (pkg / "analysis/final_decision.json").unlink()
    res = run("decide", "final", "--package", str(pkg))
    assert res.exit_code == 0 and res.output.startswith("decided gate final: promoted bridge")
    res = run("decide", "final", "--package", str(pkg), "--force")
    assert res.exit_code == 0
    assert replay_gate(pkg, "final").identical


# --------------------------------------------------------------------------- the store: defects are findings

def tree_digest(root: Path) -> dict[str, str]:
    """Every entry under `root` (no link followed): what it is and, for a file, its bytes' hash."""
    import hashlib
    import os
    import stat

    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = os.lstat(p)
            rel = p.relative_to(root).as_posix()
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest() if stat.S_ISREG(st.st_mode) else oct(st.st_mode)
    return out


def _symlink_csv(pkg: Path) -> str:
    rel = "remote-results/linux_confirm_summary.csv"
    outside = pkg.parent / "elsewhere.csv"
    shutil.copyfile(pkg / rel, outside)
    (pkg / rel).unlink()
    (pkg / rel).symlink_to(outside)
    return rel


def _fifo_csv(pkg: Path) -> str:
    import os

    rel = "remote-results/linux_final_summary.csv"
    (pkg / rel).unlink()
    os.mkfifo(pkg / rel)
    return rel


def _rules_edit(text_edit):
    def tamper(pkg: Path) -> str:
        rel = "preanalysis/confirm.rules.json"
        p = pkg / rel
        p.write_text(text_edit(p.read_text()))
        return rel
    return tamper


def _bytes_edit(rel: str, edit):
    def tamper(pkg: Path) -> str:
        p = pkg / rel
        p.write_bytes(edit(p.read_bytes()))
        return rel
    return tamper


# (what is broken, the finding's code, the key or place it must name)
DEFECTS = {
    "symlinked-run-csv": (_symlink_csv, "symlink", ""),
    "fifo-run-csv": (_fifo_csv, "not-regular-file", ""),
    "duplicate-frozen_at": (_rules_edit(lambda t: t.replace('"frozen_at": ', '"frozen_at": "2026-01-01T00:00:00Z", "frozen_at": ', 1)),
                            "json-duplicate-key", "frozen_at"),
    "nan-threshold": (_rules_edit(lambda t: t.replace('"threshold": 0.01', '"threshold": NaN', 1)), "json-non-finite", "$.checks[0].threshold"),
    "overflowing-threshold": (_rules_edit(lambda t: t.replace('"threshold": 0.01', '"threshold": 1e400', 1)),
                              "json-non-finite", "$.checks[0].threshold"),
    "too-long-integer": (_rules_edit(lambda t: t.replace('"top_k": 3', '"top_k": 3' + "0" * 80, 1)),
                         "json-number-too-long", "$.promote.top_k"),
    "too-deep": (_rules_edit(lambda t: t.replace('"checks": [', '"deep": ' + "[" * 100 + "]" * 100 + ', "checks": [', 1)),
                 "json-too-deep", ""),
    "csv-not-utf8": (_bytes_edit("remote-results/windows_confirm_summary.csv", lambda b: b.replace(b"ok", b"\xff\xfe", 1)),
                     "text-not-utf8", "byte"),
    "csv-bom": (_bytes_edit("remote-results/windows_confirm_summary.csv", lambda b: b"\xef\xbb\xbf" + b), "text-bom", ""),
    "decision-duplicate-key": (_bytes_edit("analysis/confirm_decision.json",
                                           lambda b: b.replace(b'"gate": "confirm"', b'"gate": "confirm", "gate": "x"', 1)),
                               "json-duplicate-key", "gate"),
}


@pytest.mark.parametrize("kind", sorted(DEFECTS))
def test_a_defective_file_is_a_finding_naming_it_and_nothing_is_written(pkg, kind):
    tamper, code, key = DEFECTS[kind]
    rel = tamper(pkg)
    before = tree_digest(pkg.parent)
    res = run("replay-gate", "all", "--package", str(pkg), "--json")
    assert res.exit_code == 1, res.output
    doc = json.loads(res.output)
    hits = [f for f in doc["findings"] if f["code"] == code and f["path"] == rel]
    assert hits, doc["findings"]
    assert key in hits[0]["location"] + hits[0]["message"]
    assert "Traceback" not in res.output
    text = run("replay-gate", "all", "--package", str(pkg))
    assert text.exit_code == 1 and f"{rel}" in text.output and code in text.output
    assert tree_digest(pkg.parent) == before


def test_a_defective_protocol_is_a_finding_naming_the_key(pkg):
    p = pkg / "protocol.json"
    p.write_text(p.read_text().replace('"name": ', '"name": "forged", "name": ', 1))
    res = run("replay-gate", "all", "--package", str(pkg), "--json")
    assert res.exit_code == 2
    assert "protocol.json [name]: json-duplicate-key" in json.loads(res.output)["error"]
    p.write_text(json.dumps({**load(p.with_name("MANIFEST.json")), "schema": "auditkit/protocol/v1"}))
    res = run("replay-gate", "all", "--package", str(pkg), "--json")
    assert res.exit_code == 2 and ": protocol-invalid" in json.loads(res.output)["error"]


def test_rows_are_parsed_from_the_bytes_that_were_hashed(pkg):
    from auditkit.package.columns import read_run_csv
    from auditkit.package.hashing import sha256_file
    from auditkit.package.store import PackageStore

    rel = "remote-results/linux_screen_summary.csv"
    df, sha = read_run_csv(PackageStore(pkg), rel)
    assert sha == sha256_file(pkg / rel)
    assert str(df["started"].dtype).startswith("datetime64") and df["seed"].dtype.kind == "i"
    assert list(df["_row"][:2]) == [1, 2]


def test_a_seed_that_is_not_an_integer_names_its_row(pkg):
    csv = pkg / "remote-results/linux_final_summary.csv"
    rows = csv_rows(csv)
    rows[2][rows[0].index("seed")] = "3x"
    write_rows(csv, rows)
    f = next(f for f in replay_gate(pkg, "final").findings if f.code == "row-bad-seed")
    assert (f.path, f.location, f.found) == ("remote-results/linux_final_summary.csv", "row 2, column seed", "'3x'")


def test_a_timestamp_that_does_not_parse_names_its_row(pkg):
    csv = pkg / "remote-results/windows_final_summary.csv"
    rows = csv_rows(csv)
    rows[1][rows[0].index("started_at")] = "yesterday"
    write_rows(csv, rows)
    f = next(f for f in replay_gate(pkg, "final").findings if f.code == "row-bad-timestamp")
    assert (f.path, f.location, f.found) == ("remote-results/windows_final_summary.csv", "row 1, column started_at",
                                             "'yesterday'")


def test_protocol_sense_is_a_finding_naming_the_key(pkg):
    p = pkg / "protocol.json"
    doc = load(p)
    doc["stages"][1]["seeds"] = doc["stages"][1]["seeds"] + doc["stages"][1]["seeds"][:1]
    dump(p, doc)
    res = run("replay-gate", "all", "--package", str(pkg), "--json")
    assert res.exit_code == 2
    assert "protocol.json [$.stages[1].seeds]: protocol-senseless" in json.loads(res.output)["error"]


# --------------------------------------------------------------------------- rules sense through the chain

def test_a_cycle_of_promoted_by_across_gates_is_one_finding_per_gate(pkg):
    p = pkg / "preanalysis/screen.rules.json"
    doc = load(p)
    doc["inputs"]["candidates"] = "promoted-by:final"  # screen -> final -> confirm -> screen
    dump(p, doc)
    res = run("replay-gate", "all", "--package", str(pkg), "--json")
    assert res.exit_code == 1
    cyc = [f for f in json.loads(res.output)["findings"] if f["code"] == "rules-chain-cycle"]
    assert sorted(f["path"] for f in cyc) == ["preanalysis/confirm.rules.json", "preanalysis/final.rules.json",
                                              "preanalysis/screen.rules.json"]
    assert {f["found"] for f in cyc} == {"screen -> final -> confirm -> screen", "confirm -> screen -> final -> confirm",
                                         "final -> confirm -> screen -> final"}


def test_names_a_promoted_by_gate_can_never_have_are_findings(pkg):
    p = pkg / "preanalysis/final.rules.json"
    doc = load(p)
    doc["promote"]["always_keep"] = ["no_such_config"]
    doc["checks"].append({"kind": "near_equivalence", "candidate": "greedy", "reference": "ghost", "threshold": 0.01})
    dump(p, doc)
    found = {(f.code, f.location) for f in replay_gate(pkg, "final").findings}
    assert {("rules-not-a-candidate", "$.promote.always_keep[0]"), ("rules-not-a-candidate", "$.checks[1].reference")} <= found
    # the gate is still recomputed: its changed rules differ from the recorded decision
    assert "rules-hash-mismatch" in {c for c, _ in found}


# --------------------------------------------------------------------------- output: each finding once, --json

def test_each_finding_is_printed_once(pkg):
    csv = pkg / "remote-results/linux_screen_summary.csv"
    rows = csv_rows(csv)
    rows[1][rows[0].index("val_bpb")] = "1.000000"
    write_rows(csv, rows)
    p = pkg / "preanalysis/screen.rules.json"
    doc = load(p)
    doc["inputs"]["candidates"] = "promoted-by:final"
    dump(p, doc)
    res = run("replay-gate", "all", "--package", str(pkg), "-v")
    assert res.exit_code == 1
    lines = [ln for ln in res.output.splitlines() if ": " in ln and ln.split(": ")[1].split(":")[0].count("-")]
    finding_lines = [ln for ln in lines if ln.startswith(("preanalysis/", "analysis/", "remote-results/"))]
    assert finding_lines and len(finding_lines) == len(set(finding_lines)), finding_lines
    assert res.output.count("rules-chain-cycle:") == 3
    assert "verdict: DIFFERS — " in res.output and "listed below" in res.output


def test_json_carries_the_replayed_decision_beside_the_verdict(pkg):
    res = run("replay-gate", "all", "--package", str(pkg), "--json")
    assert res.exit_code == 0
    gates = json.loads(res.output)["gates"]
    assert [g["gate"] for g in gates] == ["screen", "confirm", "final"]
    for g in gates:
        gate = g["gate"]
        rec = load(pkg / f"analysis/{gate}_decision.json")
        assert g["verdict"] == "identical" and g["differences"] == 0
        assert g["replayed"]["promoted"] == rec["promoted"]
        assert g["replayed"]["ranks"] == {c["config_id"]: c["rank"] for c in rec["candidates"]}
        assert g["replayed"]["checks"] == [{k: c.get(k) for k in ("kind", "candidate", "reference", "value",
                                                                  "threshold", "passed")} for c in rec["checks"]]
        rules = load(pkg / f"preanalysis/{gate}.rules.json")
        assert g["frozen_at"] == rules["frozen_at"] and g["frozen_before_data"] is True
        first = min(r[16] for f in (pkg / "remote-results").glob(f"*_{gate}_summary.csv") for r in csv_rows(f)[1:])
        assert g["first_input_started_at"] == first


def test_json_shows_a_late_freeze(pkg):
    p = pkg / "preanalysis/final.rules.json"
    doc = load(p)
    doc["frozen_at"] = "2027-01-01T00:00:00Z"
    dump(p, doc)
    (g,) = json.loads(run("replay-gate", "final", "--package", str(pkg), "--json").output)["gates"]
    assert (g["verdict"], g["frozen_at"], g["frozen_before_data"]) == ("differs", "2027-01-01T00:00:00Z", False)
    assert g["replayed"]["promoted"] == load(pkg / "analysis/final_decision.json")["promoted"]
    text = run("replay-gate", "final", "--package", str(pkg)).output
    assert "frozen_at 2027-01-01T00:00:00Z NOT before the first input row's start" in text


def test_no_hint_tells_the_auditor_to_regenerate_the_evidence(pkg):
    from auditkit.derived.tables import check_tables, generate_tables

    generate_tables(pkg, in_place=True)
    csv = pkg / "remote-results/windows_confirm_summary.csv"
    rows = csv_rows(csv)
    rows[1][rows[0].index("val_bpb")] = "0.100000"
    rows.append(list(rows[1]))
    write_rows(csv, rows)
    (pkg / "analysis/final_decision.json").unlink()
    findings = [f for r in replay_all(pkg) for f in r.findings] + check_tables(pkg).findings
    assert {"duplicate-run-row", "decision-missing", "table-differs"} <= {f.code for f in findings}
    for f in findings:
        text = (f.message + " " + f.hint).lower()
        assert "regenerate" not in text and "auditkit " not in text and "remove the" not in text, str(f)


# --------------------------------------------------------------------------- a decision compared as bytes

def _random_decision(rnd):
    from auditkit.gates.engine import decide_columns

    hosts = rnd.sample(["a", "b", "host-9", "z"], rnd.randint(1, 3))
    seeds = rnd.sample([1, 9, 10, 100, 4, 77], rnd.randint(1, 4))
    cands = [f"c{i}" for i in range(rnd.randint(0, 6))]
    cols = {k: [] for k in ("stage", "host", "seed", "config_id", "status", "value")}
    for c in cands:
        for h in hosts:
            for s in seeds:
                if rnd.random() < 0.08:
                    continue  # a missing cell
                status = rnd.choice(["ok"] * 8 + ["diverged", "oom"])
                v = rnd.choice([rnd.uniform(0, 3), rnd.uniform(-1e-7, 1e-7), 1e22 * rnd.random(), float("nan")])
                for k, x in zip(cols, ("s", h, s, c, status, v if status == "ok" else float("nan"))):
                    cols[k].append(x)
    rules = {"schema": "auditkit/rules/v1", "gate": "g", "frozen_at": "2026-01-01T00:00:00Z",
             "inputs": {"stages": ["s"], "hosts": hosts, "seeds": seeds, "candidates": "matrix"},
             "metric": {"column": "val_bpb", "better": rnd.choice(["lower", "higher"])},
             "promote": {"top_k": rnd.randint(0, 3), "always_keep": []},
             "checks": [{"kind": "ranks_first_in_all_cells", "candidate": c} for c in cands[:2]]}
    return decide_columns(rules, cols, cands)


def test_the_byte_comparison_agrees_with_the_canonical_writer():
    import random

    from auditkit.gates.recorded import canonical_meta as _canonical_meta, is_canonical_form as _is_canonical_form
    from auditkit.package.canonical import canonical_json_bytes

    rnd = random.Random(11)
    for _ in range(150):
        d = _random_decision(rnd)
        refs = {"rules_ref": {"path": "preanalysis/g.rules.json", "sha256": "ab" * 32},
                "inputs": [{"path": "remote-results/a_s_summary.csv", "sha256": "cd" * 32}],
                "decided_at": "2026-01-02T00:00:00Z"}
        data = canonical_json_bytes(d.to_json(**refs))
        meta = _canonical_meta(data, "x")
        assert meta is not None and _is_canonical_form(data, d, meta), data[:400]
        i = rnd.randrange(len(data) - 1)
        changed = data[:i] + (b"7" if data[i:i + 1] != b"7" else b"8") + data[i + 1:]
        # a changed byte is either not the canonical form of this decision, or it changed the recorded
        # rules/inputs/decided_at (which are checked apart)
        m2 = _canonical_meta(changed, "x")
        assert not (m2 == meta and _is_canonical_form(changed, d, m2))
        assert not _is_canonical_form(data + b" ", d, meta) and not _is_canonical_form(data[:-2] + b"\n", d, meta)


def _findings(pkg, monkeypatch, full: bool):
    from auditkit.gates import recorded as R

    with monkeypatch.context() as m:
        if full:
            m.setattr(R, "canonical_meta", lambda data, rel: None)  # every decision parsed and diffed
        return sorted(f for r in replay_all(pkg) for f in r.findings)


@pytest.mark.parametrize("tamper", ["none", "rules", "rows", "decision-meta", "decision-cell", "reordered"])
def test_the_byte_comparison_and_the_full_comparison_find_the_same(pkg, monkeypatch, tamper):
    if tamper == "rules":
        p = pkg / "preanalysis/confirm.rules.json"
        p.write_text(p.read_text().replace('"threshold": 0.01', '"threshold": 0.5'))
    elif tamper == "rows":
        csv = pkg / "remote-results/linux_screen_summary.csv"
        rows = csv_rows(csv)
        rows[3][rows[0].index("val_bpb")] = "1.000000"
        write_rows(csv, rows)
    elif tamper == "decision-meta":
        p = pkg / "analysis/confirm_decision.json"
        p.write_text(p.read_text().replace('"decided_at": "', '"decided_at": "x', 1))
    elif tamper == "decision-cell":
        p = pkg / "analysis/screen_decision.json"
        p.write_text(p.read_text().replace('"rank": 1,', '"rank": 2,', 1))
    elif tamper == "reordered":
        p = pkg / "analysis/final_decision.json"
        dump(p, load(p))  # the same decision, not in canonical form: parsed and compared field by field
    fast, full = _findings(pkg, monkeypatch, False), _findings(pkg, monkeypatch, True)
    assert fast == full
    assert (tamper == "none" or tamper == "reordered") == (fast == [])


def test_cli_replay_all_is_a_table_by_default_and_the_verdict_alone_with_quiet(pkg):
    res = run("replay-gate", "all", "--package", str(pkg))
    assert res.exit_code == 0, res.output
    lines = res.output.rstrip("\n").split("\n")
    assert len(lines) <= 20 and lines[-1] == f"OK: replay-gate {pkg} (3 gates)"
    table = {ln.split()[0]: ln.split() for ln in lines[2:5]}
    assert set(table) == {"screen", "confirm", "final"} and all(row[-1] == "identical" for row in table.values())
    assert "promoted (*): " not in res.output and "why:" not in res.output
    quiet = run("replay-gate", "all", "--package", str(pkg), "-q")
    assert quiet.exit_code == 0 and quiet.output == f"OK: replay-gate {pkg} (3 gates)\n"
    verbose = run("replay-gate", "all", "--package", str(pkg), "-v")
    assert verbose.output.count("why:") == 3 and verbose.output.count("== gate ") == 3


def test_an_unknown_check_kind_is_a_finding_at_its_key_not_a_crash(pkg):
    p = pkg / "preanalysis/confirm.rules.json"
    doc = load(p)
    doc["checks"][0]["kind"] = "median_gap"
    dump(p, doc)
    for gate in ("confirm", "all"):
        res = run("replay-gate", gate, "--package", str(pkg), "--json")
        assert res.exit_code == 1, res.output
        hits = [(f["path"], f["code"], f["location"]) for f in json.loads(res.output)["findings"]]
        assert ("preanalysis/confirm.rules.json", "rules-unknown-check", "$.checks[0].kind") in hits
        assert "a bug" not in res.output
