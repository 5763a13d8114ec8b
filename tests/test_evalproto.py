"""gate_eval_findings: a gate whose inputs were not scored alike is a finding."""

from __future__ import annotations

from auditkit.evalproto import gate_eval_findings

SHA_A, SHA_B = "a" * 64, "b" * 64


def row(run_id, sha=SHA_A, seq="128", tok="bytes", status="ok", val="0.400000"):
    return {"run_id": run_id, "status": status, "val_bpb": val if status == "ok" else "",
            "eval_sha256": sha, "eval_seq_len": seq, "tokenizer": tok}


def where(r):
    return f"remote-results/{r['run_id'].split('-')[0]}_stage_summary.csv"


def test_inputs_scored_alike_give_no_finding():
    rows = [row(f"h-{i}") for i in range(4)] + [row("h-x", sha="", seq="", tok="", status="failed")]
    assert gate_eval_findings("g", rows, where) == []


def test_a_v10_package_without_the_columns_is_not_checked():
    rows = [{"run_id": "h-1", "status": "ok", "val_bpb": "0.4"}, {"run_id": "h-2", "status": "ok", "val_bpb": "0.5"}]
    assert gate_eval_findings("g", rows, where) == []


def test_other_bytes_or_context_or_tokenizer_are_each_reported():
    rows = [row("a-1"), row("a-2"), row("a-3"), row("b-4", sha=SHA_B), row("c-5", seq="64"), row("d-6", tok="bpe512-x")]
    found = gate_eval_findings("stage2", rows, where)
    assert [(f.code, f.path, f.location) for f in found] == [
        ("eval-protocol-mismatch", "remote-results/b_stage_summary.csv", "gate stage2, row b-4, column eval_sha256"),
        ("eval-protocol-mismatch", "remote-results/c_stage_summary.csv", "gate stage2, row c-5, column eval_seq_len"),
        ("eval-protocol-mismatch", "remote-results/d_stage_summary.csv", "gate stage2, row d-6, column tokenizer"),
    ]
    assert "eval_seq_len=64" in found[1].found and "eval_seq_len=128" in found[1].expected
    assert "3 of its 6 rows" in found[0].message


def test_a_row_without_the_columns_among_rows_with_them():
    rows = [row("a-1"), row("a-2"), {"run_id": "b-3", "status": "ok", "val_bpb": "0.41"}]
    (f,) = gate_eval_findings("g", rows, where)
    assert f.code == "eval-protocol-unrecorded" and f.path == "remote-results/b_stage_summary.csv"


def test_the_result_does_not_depend_on_row_order():
    rows = [row("a-1"), row("b-2", sha=SHA_B), row("a-3"), row("c-4", seq="256")]
    assert gate_eval_findings("g", rows, where) == gate_eval_findings("g", rows[::-1], where)


def test_verify_flags_a_gate_input_scored_on_another_evaluation(smoke_copy):
    """Through `auditkit verify`: one input row of a gate claims another evaluation context."""
    import csv
    import io
    import json

    from click.testing import CliRunner

    from auditkit.cli import cli
    from auditkit.package.manifest import build_manifest

    assert CliRunner().invoke(cli, ["verify", str(smoke_copy)]).exit_code == 0
    gated = {st for g in json.loads((smoke_copy / "protocol.json").read_text())["gates"]
             for st in json.loads((smoke_copy / g["rules"]).read_text())["inputs"]["stages"]}
    path = next(p for p in sorted((smoke_copy / "remote-results").glob("*.csv"))
                if any(p.name.endswith(f"_{st}_summary.csv") for st in gated))
    rows = list(csv.DictReader(io.StringIO(path.read_text())))
    assert rows[0]["eval_seq_len"], "the bundled runner records its evaluation"
    rows[0]["eval_seq_len"] = str(int(rows[0]["eval_seq_len"]) * 2)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    path.write_text(buf.getvalue())
    build_manifest(smoke_copy)
    r = CliRunner().invoke(cli, ["verify", str(smoke_copy)])
    assert r.exit_code == 1 and "eval-protocol-mismatch" in r.output and path.name in r.output, r.output
