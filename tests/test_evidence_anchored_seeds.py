"""Anchored seeds end to end: a stage set `rng_seeds = "anchored"` trains with seeds derived from its freeze token.

The smoke protocol (fake executor) with stage2_final anchored and a local TSA:
verify and replay-gate report `seeds bound to anchor` for gate stage2 only; an
edited `rng_seed` or a dropped anchor is `seed-not-from-anchor`; stages without
the setting write the same rows as before.  The real runner trains with the
derived seed and records it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from auditkit.cli import cli
from auditkit.errors import AuditError
from auditkit.evidence.canonical import sha256_hex
from auditkit.evidence.seeds import anchored_seed
from auditkit.package.manifest import build_manifest
from auditkit.package.rows import RUN_COLUMNS, read_csv_text, write_csv_text
from fixtures.evidence import good_pki, rewrite_log, tsa_server  # noqa: F401 - fixtures
from fixtures.protofakes import FakeExecutor

REPO = Path(__file__).resolve().parents[1]
ANCHORED = "stage2_final"
CSV = f"remote-results/linux_{ANCHORED}_summary.csv"


def smoke_manifest(dest: Path, anchored: str | None = ANCHORED, setting: str = 'rng_seeds = "anchored"') -> Path:
    """manifests/smoke.toml (and its matrix) copied into `dest`, with `setting` on stage `anchored`."""
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "manifests" / "smoke_matrix.csv", dest / "smoke_matrix.csv")
    text = (REPO / "manifests" / "smoke.toml").read_text("utf-8")
    if anchored:
        line = f'stage = "{anchored}"\n'
        assert text.count(line) == 1
        text = text.replace(line, line + setting + "\n")
    (dest / "smoke.toml").write_text(text, "utf-8")
    return dest / "smoke.toml"


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def events(pkg: Path) -> list[dict]:
    return [json.loads(line) for line in (pkg / "evidence/events.jsonl").read_bytes().splitlines()]


@pytest.fixture(scope="module")
def study(tmp_path_factory, tsa_server):
    from auditkit.evidence.record import Recorder
    from auditkit.study.run import run_protocol
    from auditkit.study.spec import load_manifest

    tmp = tmp_path_factory.mktemp("anchored")
    manifest = load_manifest(smoke_manifest(tmp / "m"))
    out = tmp / "pkg"
    with pytest.MonkeyPatch.context() as mp:  # figures (matplotlib, seconds) have no part in the evidence
        mp.setattr("auditkit.derived.figures.generate_figures", lambda package: None)
        outcome = run_protocol(manifest, out, list(manifest.protocol.hosts), executor=FakeExecutor(),
                               evidence=Recorder(out, tsa_urls=[tsa_server.url]))
    assert outcome.complete
    return out


@pytest.fixture
def copy(study, tmp_path):
    dest = tmp_path / "pkg"
    shutil.copytree(study, dest)
    return dest


def test_anchored_stage_rows_carry_the_seed_derived_from_the_rules_token(study):
    proto = json.loads((study / "protocol.json").read_text())
    assert {s["stage"]: s.get("rng_seeds") for s in proto["stages"]} == {
        "stage0_smoke": None, "stage1_screen": None, ANCHORED: "anchored"}
    evs = events(study)
    [anchor] = [e for e in evs if e["type"] == "seeds-anchored"]
    token = next(e for e in evs if e["type"] == "timestamped" and e["token"] == anchor["token"])
    assert anchor["stage"] == ANCHORED and token["subject"] == "preanalysis/stage2.rules.json"
    assert anchor["token_sha256"] == sha256_hex((study / anchor["token"]).read_bytes())
    # logged after the freeze it names and before the stage's first cell
    first_cell = min(e["seq"] for e in evs if e["type"] == "cell-started" and e["stage"] == ANCHORED)
    assert token["seq"] < anchor["seq"] < first_cell
    # the stages without the setting are written as before: no rng_seed column
    plain, _ = read_csv_text((study / "remote-results/linux_stage1_screen_summary.csv").read_text())
    assert plain[:len(RUN_COLUMNS)] == list(RUN_COLUMNS) and "rng_seed" not in plain
    for host in ("windows", "linux"):
        header, rows = read_csv_text((study / f"remote-results/{host}_{ANCHORED}_summary.csv").read_text())
        assert header == [*plain, "rng_seed"] and len(rows) == 4
        for r in rows:
            assert r["rng_seed"] == str(anchored_seed(anchor["token_sha256"], ANCHORED, int(r["seed"])))
        assert len({r["rng_seed"] for r in rows}) == 2  # one per nominal seed (43, 44), the same on each config
    header, _ = read_csv_text((study / "remote-results/windows_stage0_smoke_summary.csv").read_text())
    assert header == plain


def test_verify_and_replay_report_seeds_bound_for_the_anchored_gate_only(study, good_pki):
    r = invoke("verify", study, "--trusted-tsa", good_pki.ca_cert, "--json")
    assert r.exit_code == 0, r.output
    ev = json.loads(r.output)["info"]["freeze_evidence"]
    assert ev["stage2"]["seeds_bound"] is True and ev["stage2"]["level"] == "timestamped"
    assert ev["stage1"]["seeds_bound"] is False
    r = invoke("verify", study, "--trusted-tsa", good_pki.ca_cert)
    assert r.exit_code == 0, r.output
    line2 = next(ln for ln in r.output.splitlines() if "gate stage2 frozen:" in ln)
    line1 = next(ln for ln in r.output.splitlines() if "gate stage1 frozen:" in ln)
    assert line2.rstrip().endswith("seeds bound to anchor") and "seeds bound" not in line1
    r = invoke("replay-gate", "stage2", "--package", study, "--trusted-tsa", good_pki.ca_cert,
               "--require", "seeds-bound")
    assert r.exit_code == 0, r.output
    assert "seeds bound to anchor" in r.output
    r = invoke("replay-gate", "all", "--package", study, "--trusted-tsa", good_pki.ca_cert,
               "--require", "seeds-bound", "--json")
    assert r.exit_code == 1 and json.loads(r.output)["counts"] == {"evidence-below-required": 1}
    r = invoke("tables", "--package", study, "--check")
    assert r.exit_code == 0, r.output
    # a token nobody trusts binds nothing
    r = invoke("verify", study, "--json")
    assert r.exit_code == 0 and json.loads(r.output)["info"]["freeze_evidence"]["stage2"]["seeds_bound"] is False


def test_edited_rng_seed_is_seed_not_from_anchor(copy, good_pki):
    header, rows = read_csv_text((copy / CSV).read_text())
    rows[2]["rng_seed"] = str(int(rows[2]["rng_seed"]) ^ 1)
    (copy / CSV).write_text(write_csv_text(header, rows))
    build_manifest(copy)
    r = invoke("verify", copy, "--trusted-tsa", good_pki.ca_cert, "--json")
    assert r.exit_code == 1
    doc = json.loads(r.output)
    seeds = [f for f in doc["findings"] if f["code"] == "seed-not-from-anchor"]
    assert [(f["path"], f["location"]) for f in seeds] == [(CSV, "row 3, column rng_seed")]
    assert doc["info"]["freeze_evidence"]["stage2"]["seeds_bound"] is False
    r = invoke("replay-gate", "stage2", "--package", copy, "--trusted-tsa", good_pki.ca_cert)
    assert r.exit_code == 1 and "seed-not-from-anchor" in r.output


def test_dropped_anchor_of_a_declared_stage_is_seed_not_from_anchor(copy, good_pki):
    rewrite_log(copy, lambda docs: [d for d in docs if d["type"] != "seeds-anchored"])
    build_manifest(copy)
    r = invoke("verify", copy, "--trusted-tsa", good_pki.ca_cert, "--json")
    assert r.exit_code == 1
    doc = json.loads(r.output)
    seeds = [f for f in doc["findings"] if f["code"] == "seed-not-from-anchor"]
    assert [(f["path"], f["location"]) for f in seeds] == [("evidence/events.jsonl", f"stage {ANCHORED}")]


def test_anchored_stage_without_tsa_is_refused_before_anything_is_written(tmp_path):
    manifest = smoke_manifest(tmp_path / "m")
    for extra in ([], ["--evidence"]):
        out = tmp_path / f"pkg{len(extra)}"
        r = invoke("protocol", "run", manifest, "--out", out, "--host", "all", *extra)
        assert r.exit_code == 2, r.output
        assert f"{ANCHORED} set rng_seeds = \"anchored\"" in r.output and "--tsa URL" in r.output
        assert not out.exists()


@pytest.mark.parametrize("anchored, setting, message", [
    (ANCHORED, 'rng_seed = "anchored"', "unknown key(s) ['rng_seed']"),
    (ANCHORED, 'rng_seeds = "yes"', "'yes' is not one of ['nominal', 'anchored']"),
    ("stage0_smoke", 'rng_seeds = "anchored"', "(stage0_smoke) sets rng_seeds = \"anchored\", but no gate reads it"),
])
def test_manifest_setting_is_checked(tmp_path, anchored, setting, message):
    from auditkit.study.spec import load_manifest

    with pytest.raises(AuditError) as exc:
        load_manifest(smoke_manifest(tmp_path, anchored, setting))
    assert message in str(exc.value)


def test_without_the_setting_the_protocol_is_v1(tmp_path):
    from auditkit.package.protocol import protocol_from_dict
    from auditkit.study.spec import load_manifest

    proto = load_manifest(smoke_manifest(tmp_path, None)).protocol
    assert not any(s.anchored for s in proto.stages)
    assert all("rng_seeds" not in s for s in proto.to_json()["stages"])
    explicit = load_manifest(smoke_manifest(tmp_path / "x", ANCHORED, 'rng_seeds = "nominal"')).protocol
    assert explicit.to_json() == proto.to_json()
    anchored = load_manifest(smoke_manifest(tmp_path / "a")).protocol
    assert protocol_from_dict(anchored.to_json()) == anchored


def test_runner_trains_with_the_anchored_seed_and_records_it(tmp_path):
    """A cell given rng_seed R (nominal seed 43) trains the very weights `--seed R` trains, and records R.

    The anchored cell goes the protocol's way (execute_cell -> run_cell -> runner
    subprocess); the reference run is the runner's main() in this process (one
    torch start-up less).
    """
    from safetensors import safe_open

    from auditkit.runner.train import main as runner_main
    from auditkit.study.executors import CellTask, execute_cell
    from auditkit.package.protocol import Budget

    row = {"config_id": "tiny", "depth": "1", "aspect_ratio": "32", "head_dim": "16", "seq_len": "64",
           "total_batch_size": "512", "device_batch_size": "8"}
    settings = {"data": "markov:seed=0", "eval_tokens": 1024}
    rng = anchored_seed("ab" * 32, "s", 43)
    task = CellTask(run_id="h-s-tiny-s43", host="h", stage="s", config_id="tiny", seed=43,
                    budget=Budget("steps", 2), matrix_row=row, timeout=300, settings=settings, rng_seed=rng)
    anchored = execute_cell(task)
    s = anchored.summary
    assert s["status"] == "ok", s.get("error")
    assert (s["seed"], s["rng_seed"]) == (43, rng)
    ref = tmp_path / "ref"
    assert runner_main(["--config-json", json.dumps(row), "--seed", str(rng), "--budget", "2steps", "--out", str(ref),
                        "--run-id", "ref", "--data", settings["data"], "--eval-tokens", "1024"]) == 0
    plain = json.loads((ref / "summary.json").read_text())
    assert "rng_seed" not in plain and s["val_bpb"] == plain["val_bpb"]
    ck = tmp_path / "anchored.safetensors"
    ck.write_bytes(anchored.checkpoint)
    loaded = {}
    for name, path in (("anchored", ck), ("plain", ref / "checkpoint.safetensors")):
        with safe_open(str(path), "pt") as f:
            loaded[name] = ({k: f.get_tensor(k) for k in f.keys()}, f.metadata())
    (wa, meta), (wp, meta_plain) = loaded["anchored"], loaded["plain"]
    assert (meta["seed"], meta["rng_seed"]) == ("43", str(rng)) and "rng_seed" not in meta_plain
    assert wa.keys() == wp.keys() and all(bool((wa[k] == wp[k]).all()) for k in wa)


def test_verify_compares_a_rows_rng_seed_with_its_checkpoint(tmp_path):
    """The checkpoint's metadata records the seed it trained with; a row claiming another is a finding."""
    from fixtures import pkgbuild
    from auditkit.verify.orchestrate import verify_package

    pkg = pkgbuild.build(tmp_path / "pkg")
    rel = "remote-results/linux_s1_summary.csv"
    header, rows = read_csv_text((pkg / rel).read_text())
    for r in rows:  # checkpoints trained with rng_seed 7, as the runner records it
        data = pkgbuild.checkpoint_bytes(r["run_id"], r["config_id"], extra_meta={"rng_seed": "7"})
        (pkg / r["checkpoint"]).write_bytes(data)
        r.update(checkpoint_sha256=pkgbuild.sha(data), rng_seed="7")

    def write_rows():
        text = write_csv_text([*header, "rng_seed"], rows)
        (pkg / rel).write_text(text)
        dpath = pkg / "analysis/s1_decision.json"
        decision = json.loads(dpath.read_text())
        decision["inputs"] = [dict(i, sha256=pkgbuild.sha(text.encode())) if i["path"] == rel else i
                              for i in decision["inputs"]]
        dpath.write_text(json.dumps(decision, indent=2) + "\n")
        build_manifest(pkg)

    write_rows()
    report = verify_package(pkg)
    assert report.ok, report.render_text()
    rows[1]["rng_seed"] = "8"
    write_rows()
    report = verify_package(pkg)
    assert [(f.code, f.path, f.location, f.expected, f.found) for f in report.findings] == [
        ("checkpoint-run-mismatch", rows[1]["checkpoint"], "__metadata__.rng_seed", "8", "7")]
