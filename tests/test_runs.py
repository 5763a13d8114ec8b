"""auditkit's side of the runner: run_cell (timeout, failures), summary_to_row, budgets, `auditkit run`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from auditkit.cli import cli
from auditkit.errors import AuditError
from auditkit.package.protocol import Budget
from auditkit.package.rows import EVAL_COLUMNS, RUN_COLUMNS
from auditkit.study.runs import parse_budget, run_cell, summary_to_row
from auditkit.package.schemas import schema_errors

TINY = {"config_id": "tiny", "role": "screened", "depth": "1", "aspect_ratio": "32", "head_dim": "16",
        "seq_len": "64", "total_batch_size": "512", "device_batch_size": "8", "matrix_lr": "0.03"}
SETTINGS = {"data": "markov:seed=0", "eval_tokens": 2048}


@pytest.fixture(scope="module")
def ok_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("ok")
    return out, run_cell(matrix_row=TINY, seed=5, budget=Budget("steps", 4), out_dir=out, run_id="h-tiny-s5",
                         timeout=300, settings=SETTINGS)


def test_run_cell_returns_and_writes_the_summary(ok_run):
    out, s = ok_run
    assert s["status"] == "ok" and s["num_steps"] == 4 and s["eval_tokens"] == 2048
    assert json.loads((out / "summary.json").read_text()) == s
    assert (out / "checkpoint.safetensors").exists() and (out / "runner.log").exists()


def test_summary_to_row_has_exactly_the_spec_columns(ok_run):
    _, s = ok_run
    row = summary_to_row(s, host="linux", stage="stage1_5s", budget=Budget("steps", 4),
                         checkpoint_relpath="checkpoints/h-tiny-s5.safetensors",
                         checkpoint_sha256=s["checkpoint_sha256"])
    assert tuple(row) == RUN_COLUMNS + EVAL_COLUMNS and all(isinstance(v, str) for v in row.values())
    assert schema_errors(row, "run-row") == []
    assert row["val_bpb"] == f"{s['val_bpb']:.6f}" and len(row["val_bpb"].split(".")[1]) == 6
    assert (row["budget_kind"], row["budget_value"], row["num_steps"], row["seed"]) == ("steps", "4", "4", "5")
    assert row["checkpoint_sha256"] == s["checkpoint_sha256"]
    assert (row["eval_sha256"], row["eval_seq_len"], row["tokenizer"]) == (s["eval_sha256"], "128", "bytes")
    assert float(row["val_bpb_se"]) == pytest.approx(s["val_bpb_se"], abs=1e-6) and row["eval_bytes"] == "2048"
    bare = summary_to_row(s, host="linux", stage="stage1_5s", budget=Budget("steps", 4))
    assert bare["checkpoint"] == "" and bare["checkpoint_sha256"] == ""


def test_summary_to_row_never_claims_ok_without_a_metric(ok_run):
    _, s = ok_run
    row = summary_to_row(dict(s, val_bpb=None), host="h", stage="s", budget=Budget("seconds", 2.5))
    assert row["status"] == "failed" and row["val_bpb"] == "" and row["budget_value"] == "2.5"
    assert all(row[c] == "" for c in EVAL_COLUMNS) and schema_errors(row, "run-row") == []


def test_timeout_is_recorded(tmp_path):
    s = run_cell(matrix_row=TINY, seed=1, budget=Budget("steps", 100000), out_dir=tmp_path / "t", run_id="t",
                 timeout=3, settings=SETTINGS)
    assert s["status"] == "timeout" and s["val_bpb"] is None and schema_errors(s, "run-summary") == []
    assert json.loads((tmp_path / "t/summary.json").read_text())["status"] == "timeout"
    assert 2.5 < s["total_seconds"] < 30


@pytest.mark.parametrize("row,settings,needle", [
    (dict(TINY, window_pattern="XL"), SETTINGS, "window_pattern"),     # runner refuses its arguments (exit 2)
    (TINY, {"data": "nosuch:thing"}, "unknown data spec"),              # runner refuses its data (exit 2)
    (TINY, {"data": "markov:seed=0", "eval_tokens": 10**9}, "the evaluation needs"),
])
def test_a_failing_runner_still_gives_a_failed_summary(tmp_path, row, settings, needle):
    s = run_cell(matrix_row=row, seed=1, budget=Budget("steps", 2), out_dir=tmp_path, run_id="f",
                 timeout=120, settings=settings)
    assert s["status"] == "failed" and s["val_bpb"] is None and needle in s["error"]
    assert schema_errors(s, "run-summary") == []
    assert summary_to_row(s, host="h", stage="s", budget=Budget("steps", 2))["status"] == "failed"


@pytest.mark.parametrize("text,kind,value", [("30s", "seconds", 30), ("2.5s", "seconds", 2.5),
                                             ("200steps", "steps", 200), (" 10S ", "seconds", 10)])
def test_parse_budget(text, kind, value):
    assert parse_budget(text) == Budget(kind, float(value))


@pytest.mark.parametrize("text", ["30", "abc", "0s", "-3steps", "10 minutes", "1.5steps", ""])
def test_parse_budget_rejects(text):
    with pytest.raises(AuditError, match="budget"):
        parse_budget(text)


@pytest.fixture()
def matrix(tmp_path):
    m = tmp_path / "m.csv"
    hot = dict(TINY, config_id="hot", matrix_lr="1e6", embedding_lr="1e6", unembedding_lr="1e6")
    m.write_text("\n".join(",".join(r.get(k, "") for k in hot) for r in (dict(zip(hot, hot)), TINY, hot)) + "\n")
    return m


def invoke(*args):
    return CliRunner().invoke(cli, ["run", *map(str, args)])


def test_run_cli_ok_prints_the_row(matrix, tmp_path):
    r = invoke("--matrix", matrix, "--config-id", "tiny", "--seed", 3, "--budget", "3steps",
               "--out", tmp_path / "o", "--data", "markov:seed=0", "--threads", 1, "--timeout", 300,
               "--eval-tokens", 1024)
    assert r.exit_code == 0, r.output
    for col in RUN_COLUMNS:
        assert col in r.output
    assert " ok" in r.output
    summary = json.loads((tmp_path / "o/summary.json").read_text())
    assert (summary["seed"], summary["eval_tokens"]) == (3, 1024)


def test_run_cli_rng_seed_trains_with_it_and_keeps_the_seed_as_identity(matrix, tmp_path):
    common = ["--matrix", matrix, "--config-id", "tiny", "--seed", 3, "--budget", "2steps", "--threads", 1,
              "--timeout", 300, "--eval-tokens", 1024]
    r = invoke(*common, "--out", tmp_path / "a", "--rng-seed", 777)
    assert r.exit_code == 0, r.output
    a = json.loads((tmp_path / "a/summary.json").read_text())
    assert (a["seed"], a["rng_seed"]) == (3, 777)
    assert invoke(*common, "--out", tmp_path / "b").exit_code == 0
    b = json.loads((tmp_path / "b/summary.json").read_text())
    assert b.get("rng_seed") in (None, 3) and b["val_bpb"] != a["val_bpb"]   # other generators, other weights
    r = invoke(*common, "--out", tmp_path / "c", "--rng-seed", -1)
    assert r.exit_code == 2 and "--rng-seed" in r.output and not (tmp_path / "c").exists()


def test_run_cli_exit_1_when_the_run_did_not_end_ok(matrix, tmp_path):
    r = invoke("--matrix", matrix, "--config-id", "hot", "--seed", 3, "--budget", "20steps", "--out", tmp_path / "o")
    assert r.exit_code == 1 and "diverged" in r.output


@pytest.mark.parametrize("args,needle", [
    (["--config-id", "nope", "--budget", "3steps"], "no row with config_id 'nope'"),
    (["--config-id", "tiny", "--budget", "five"], "budget 'five'"),
])
def test_run_cli_bad_input_exits_2(matrix, tmp_path, args, needle):
    r = invoke("--matrix", matrix, "--seed", 3, "--out", tmp_path / "o", *args)
    assert r.exit_code == 2 and needle in r.output and "Traceback" not in r.output
    assert not (tmp_path / "o").exists()


def test_run_cli_unreadable_matrix_exits_2(tmp_path):
    r = invoke("--matrix", tmp_path / "missing.csv", "--config-id", "tiny", "--seed", 3, "--budget", "3steps",
               "--out", tmp_path / "o")
    assert r.exit_code == 2 and "cannot read the matrix" in r.output and "missing.csv" in r.output


def test_settings_seq_len_fills_rows_without_one_and_unknown_settings_fail(tmp_path):
    s = run_cell(matrix_row=TINY, seed=1, budget=Budget("steps", 1), out_dir=tmp_path / "a", run_id="a",
                 timeout=120, settings=dict(SETTINGS, seq_len=32))
    assert s["status"] == "ok" and s["model_config"]["seq_len"] == 64  # the row's own seq_len wins
    no_len = {k: v for k, v in TINY.items() if k != "seq_len"}
    s = run_cell(matrix_row=no_len, seed=1, budget=Budget("steps", 1), out_dir=tmp_path / "b", run_id="b",
                 timeout=120, settings=dict(SETTINGS, seq_len=32))
    assert s["status"] == "ok" and s["model_config"]["seq_len"] == 32
    s = run_cell(matrix_row=TINY, seed=1, budget=Budget("steps", 1), out_dir=tmp_path / "c", run_id="c",
                 settings={"eval_token": 5})
    assert s["status"] == "failed" and "eval_token" in s["error"] and schema_errors(s, "run-summary") == []


def test_a_source_checkout_in_the_working_directory_does_not_shadow_the_runner(tmp_path, monkeypatch):
    # `python -m` would import ./auditkit first: a directory named auditkit without the
    # runner (a checkout, or anything else) must not break the cell
    (tmp_path / "auditkit").mkdir()
    (tmp_path / "auditkit" / "__init__.py").write_text("raise ImportError('shadow package imported')\n")
    monkeypatch.chdir(tmp_path)
    s = run_cell(matrix_row=TINY, seed=5, budget=Budget("steps", 2), out_dir=tmp_path / "out",
                 run_id="h-tiny-s5", timeout=300, settings=SETTINGS)
    assert s["status"] == "ok", s.get("error")


def test_the_runner_checks_its_settings_and_data_before_a_protocol_runs(tmp_path):
    from auditkit.study.runs import check_runner_settings

    assert check_runner_settings(TINY, SETTINGS).startswith("ok: data 'markov:seed=0', bytes, evaluation of 2048 tokens")
    with pytest.raises(AuditError, match="no such data file"):
        check_runner_settings(TINY, {"data": f"text:{tmp_path / 'missing.txt'}"})
    with pytest.raises(AuditError, match="the evaluation needs"):
        check_runner_settings(TINY, {"eval_tokens": 10 ** 9})
    with pytest.raises(AuditError, match="unknown runner setting"):
        check_runner_settings(TINY, {"evaltokens": 5})


def test_a_protocol_with_unusable_data_stops_before_writing_anything(tmp_path):
    import shutil

    from auditkit.study.run import run_protocol
    from auditkit.study.spec import load_manifest

    repo = Path(__file__).resolve().parents[1] / "manifests"
    shutil.copy(repo / "smoke_matrix.csv", tmp_path / "smoke_matrix.csv")
    text = (repo / "smoke.toml").read_text()
    (tmp_path / "smoke.toml").write_text(text.replace('data = "markov:seed=0"', f'data = "text:{tmp_path}/nope.txt"'))
    manifest = load_manifest(tmp_path / "smoke.toml")
    with pytest.raises(AuditError, match="no such data file"):
        run_protocol(manifest, tmp_path / "pkg", list(manifest.protocol.hosts))
    assert not (tmp_path / "pkg").exists()
