"""The one gate pipeline (issue 23): one `promoted-by:` parser and resolver, one walk over gates with
one cycle check, one columnar CSV reader; each pipeline step's contract on its own."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from auditkit.package.protocol import PROMOTED_BY, parent_gate
from auditkit.gates.chain import GateWalk, chain_bound, cycle_path, resolve_candidates, rules_parent
from auditkit.gates.diff import TOLERANCE, num_differs
from auditkit.gates.engine import DuplicateRowError
from auditkit.gates.pipeline import decide_rows, engine_columns, select_rows
from auditkit.package.columns import concat_rows, csv_header, text_frame
from auditkit.errors import PackageDefect

REPO = Path(__file__).resolve().parents[1]
LIB = REPO / "auditkit"
CHAIN = "auditkit/package/protocol.py"   # parent_gate, re-exported by auditkit.gates.chain

# Modules allowed a parser of their own beside CHAIN: none (each calls
# `auditkit.package.protocol.parent_gate`).
PENDING_PARSERS: dict[str, int] = {}
# CSV parsing calls: the store's text reader and the columnar reader are the library's two sites.
CSV_SITES = {"auditkit/package/store.py", "auditkit/package/columns.py"}
PENDING_CSV: dict[str, str] = {}   # none left: every CSV read goes through one of the two


def prefix_parsers(source: str, name: str = "<src>") -> list[int]:
    """Lines of `source` holding a string constant that parses the ``promoted-by`` prefix: the
    prefix itself (``"promoted-by:"``, ``"promoted-by"``) or a regex anchored on it. A constant
    that is a piece of an f-string builds a spec rather than parsing one, and messages, docstrings
    and the finding-code catalogue are longer text: none of those count."""
    tree = ast.parse(source, name)
    in_fstring = {id(v) for node in ast.walk(tree) if isinstance(node, ast.JoinedStr) for v in node.values}
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in in_fstring:
            text = node.value.lstrip("^")
            if text in ("promoted-by:", "promoted-by") or (text.startswith("promoted-by") and node.value != text):
                out.append(node.lineno)
    return out


def library_files():
    for path in sorted(LIB.rglob("*.py")):
        rel = path.relative_to(REPO).as_posix()
        if rel != "auditkit/codes.py":
            yield rel, path.read_text("utf-8")


def test_the_scan_finds_a_parser_and_nothing_else():
    assert prefix_parsers('if c.startswith("promoted-by:"):\n    p = c.split(":", 1)[1]\n') == [1]
    assert prefix_parsers('m = re.match(r"^promoted-by:(.+)$", c)\n') == [1]
    assert prefix_parsers('p = c.removeprefix("promoted-by")\n') == [1]
    assert prefix_parsers('spec = f"promoted-by:{gate}"\n') == []
    assert prefix_parsers('"""Candidates ``promoted-by:<gate>`` are the parent\'s promoted list."""\n'
                          'msg = "a promoted-by chain that ends at the matrix"\n') == []


def test_one_promoted_by_resolver():
    found = {rel: prefix_parsers(text, rel) for rel, text in library_files()}
    found = {rel: lines for rel, lines in found.items() if lines}
    assert found.pop(CHAIN, None) is not None and len(prefix_parsers((REPO / CHAIN).read_text())) == 1
    extra = {rel: lines for rel, lines in found.items() if len(lines) > PENDING_PARSERS.get(rel, 0)}
    assert not extra, ("a second parser of the promoted-by: prefix; call auditkit.package.protocol.parent_gate / "
                       f"resolve_candidates instead: {extra}")
    stale = {rel: n for rel, n in PENDING_PARSERS.items() if len(found.get(rel, [])) < n}
    assert not stale, f"these modules no longer parse the prefix: drop them from PENDING_PARSERS: {stale}"


def csv_calls(text: str, rel: str) -> list[str]:
    out = []
    for node in ast.walk(ast.parse(text, rel)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            call = ast.unparse(node.func)
            if call in ("pd.read_csv", "pandas.read_csv", "csv.reader", "csv.DictReader"):
                out.append(call)
    return out


def test_two_csv_read_sites():
    found = {rel: csv_calls(text, rel) for rel, text in library_files()}
    sites = {rel for rel, calls in found.items() if calls}
    assert CSV_SITES <= sites
    extra = {rel: found[rel] for rel in sites - CSV_SITES if set(found[rel]) != {PENDING_CSV.get(rel)}}
    assert not extra, f"CSV read outside the store's text reader and package/columns.py: {extra}"
    assert not set(PENDING_CSV) - sites, "a pending CSV site is gone: drop it from PENDING_CSV"


# --------------------------------------------------------------------------- the chain

def test_parent_gate_parses_only_the_prefix():
    assert parent_gate(PROMOTED_BY + "screen") == "screen"
    assert parent_gate("promoted-by:a:b") == "a:b"
    assert [parent_gate(x) for x in ("matrix", ["promoted-by:x"], None, "promoted_by:x")] == [None] * 4
    assert rules_parent({"inputs": {"candidates": "promoted-by:g"}}) == "g"
    assert rules_parent({"inputs": ["promoted-by:g"]}) is None and rules_parent("x") is None


def test_resolve_candidates_asks_the_source():
    asked = []

    def promoted(parent):
        asked.append(parent)
        return ["b", "a"]

    assert resolve_candidates("matrix", matrix=lambda: ["m1"], promoted=promoted) == ["m1"]
    assert resolve_candidates(("x", "y"), matrix=lambda: 1 / 0, promoted=promoted) == ["x", "y"]
    assert resolve_candidates("promoted-by:g1", matrix=lambda: 1 / 0, promoted=promoted) == ["b", "a"]
    assert asked == ["g1"]


def test_the_walk_visits_each_gate_once_and_names_a_cycle():
    parents = {"a": None, "b": "a", "c": "b", "x": "z", "y": "x", "z": "y"}
    visits = []

    def visit(gate, follow):
        visits.append(gate)
        p = parents[gate]
        return gate if p is None else f"{follow(p)}>{gate}"

    follow = GateWalk(visit, lambda gate, path: "cycle:" + "->".join(path))
    assert [follow(g) for g in "cba"] == ["a>b>c", "a>b", "a"]
    assert visits == ["c", "b", "a"]
    assert follow("x") == "cycle:x->z->y->x>y>z>x"   # x met again while its chain resolves: the path to it
    assert follow("y") == "cycle:x->z->y->x>y" and follow("z") == "cycle:x->z->y->x>y>z"   # memoised
    assert visits == ["c", "b", "a", "x", "z", "y"]
    assert cycle_path(("a", "b"), "a") == ("a", "b", "a") and cycle_path(("a",), "b") is None


def test_chain_bound_uses_the_one_cycle_check():
    docs = {"a": {"inputs": {"candidates": "promoted-by:c"}}, "b": {"inputs": {"candidates": "promoted-by:a"}},
            "c": {"inputs": {"candidates": "promoted-by:b"}}, "z": {"inputs": {"candidates": "promoted-by:a"}}}
    assert chain_bound("z", docs.get).cycle == ("a", "c", "b", "a")


# --------------------------------------------------------------------------- rows, columns, decision

RULES = {"gate": "g", "frozen_at": "2026-01-01T00:00:00Z",
         "inputs": {"stages": ["s"], "hosts": ["h1", "h2"], "seeds": [1], "candidates": ["p", "q"]},
         "metric": {"column": "val_bpb", "better": "lower"}, "promote": {"top_k": 1}, "checks": []}


def frame(rows, file="remote-results/x.csv"):
    df = pd.DataFrame(rows, columns=["stage", "host", "seed", "config_id", "status", "value"])
    df["_file"] = file
    df["_row"] = np.arange(1, len(df) + 1)
    return df


def test_select_rows_and_decide_rows():
    df = frame([("s", "h1", 1, "p", "ok", 1.0), ("s", "h2", 1, "p", "ok", 1.0), ("s", "h1", 1, "q", "ok", 2.0),
                ("s", "h2", 1, "q", "ok", 0.5), ("other", "h1", 1, "q", "ok", 9.0), ("s", "h1", 2, "q", "ok", 9.0)])
    sel = select_rows(df, RULES)
    assert len(sel) == 4
    d = decide_rows(RULES, sel, ["p", "q"])
    assert d.promoted == ("p",)   # mean 1.0 against q's 1.25: lower is better
    assert decide_rows(RULES, df, ["p", "q"]).promoted == d.promoted   # the engine ignores unselected rows too
    cats = sel.astype({c: "category" for c in ("stage", "host", "config_id", "status")})
    assert decide_rows(RULES, cats, ["p", "q"]).to_json(rules_ref={}, inputs=[], decided_at="") == \
        d.to_json(rules_ref={}, inputs=[], decided_at="")


def test_a_duplicate_names_file_and_row():
    df = frame([("s", "h1", 1, "p", "ok", 1.0), ("s", "h1", 1, "p", "ok", 1.5)], file="remote-results/h1_s.csv")
    with pytest.raises(DuplicateRowError) as exc:
        decide_rows(RULES, df, ["p", "q"])
    assert exc.value.where == ["remote-results/h1_s.csv row 1", "remote-results/h1_s.csv row 2"]
    assert engine_columns(df)["where"][1] == "remote-results/h1_s.csv row 2"


def test_text_frame_names_the_file():
    df = text_frame(b"a,b\n1,\n", "t.csv", ["b"])
    assert list(df.columns) == ["b"] and df["b"].tolist() == [""]
    assert text_frame(b"a,b\n1,2\n", "t.csv", lambda c: c == "a")["a"].tolist() == ["1"]
    with pytest.raises(PackageDefect) as exc:
        text_frame(b"a,b\n1,2\n", "t.csv", ["nope"], what="run CSV")
    assert exc.value.finding.path == "t.csv" and exc.value.finding.code == "csv-unreadable"
    assert "not a readable run CSV" in exc.value.finding.message
    with pytest.raises(PackageDefect) as exc:
        csv_header(b"a,a\n", "d.csv")
    assert exc.value.finding.code == "csv-duplicate-column"


def test_concat_of_nothing_has_the_columns():
    out = concat_rows([])
    assert {"stage", "host", "seed", "value", "_row", "_file"} <= set(out.columns) and len(out) == 0


def test_one_number_test_for_both_diffs():
    assert not num_differs(1.0, 1.0 + TOLERANCE / 2) and num_differs(1.0, 1.0 + 2 * TOLERANCE)
    assert not num_differs(1.0, 1.0 + 4e-7, 5e-7 + 1e-12) and num_differs(1.0, 1.0 + 6e-7, 5e-7 + 1e-12)
    assert num_differs(None, 0.0) and not num_differs(None, None) and num_differs(float("nan"), float("nan"))
    assert num_differs(True, 1.0) and num_differs("x", 1.0)


def test_render_why_is_the_reasons_of_the_engine_result():
    from auditkit.gates.render import render_why
    from auditkit.gates.replay import GateReplay

    df = frame([("s", "h1", 1, "p", "ok", 1.0), ("s", "h2", 1, "p", "ok", 1.0), ("s", "h1", 1, "q", "ok", 2.0),
                ("s", "h2", 1, "q", "crashed", 0.5)])
    d = decide_rows(RULES, df, ["p", "q"])
    assert render_why(GateReplay("g", rules=RULES, decision=d)) == (
        "why:\n  p: promoted: rank 1 of 1 eligible, within top_k=1\n  q: ineligible: h2/1 crashed")
    assert render_why(GateReplay("g", rules=RULES)) is None


@pytest.mark.parametrize("cell, location", [
    ({"val_bpb": 1.5, "rank": True}, "rank"), ({"val_bpb": 1.5, "rank": 2.5}, "rank"),
    ({"val_bpb": "1.5", "rank": 1}, "val_bpb"), ({"val_bpb": False, "rank": 1}, "val_bpb"),
    ("not an object", ""), ({"val_bpb": 1.5, "rank": 3.0}, None), ({"val_bpb": None, "rank": None}, None),
    ({"val_bpb": 2, "rank": 1}, None), ({}, None)])
def test_cell_findings_name_each_bad_cell_among_many_good_ones(cell, location):
    """The fast path (types tested in bulk) and the cell-by-cell path give the same verdicts."""
    from auditkit.gates.documents import cell_findings

    cells = {f"h/{s}": {"val_bpb": 1.0 + s / 1000, "rank": 1 + s % 5} for s in range(500)}
    cells["h/250"] = cell
    got = [(f.code, f.location) for f in cell_findings("analysis/x_decision.json", 3, cells)]
    if location is None:
        assert got == []
    else:
        want = "$.candidates[3].cells.h/250" + (f".{location}" if location else "")
        assert got == [("schema-invalid", want)]


def test_replay_reads_the_frame_the_tables_parsed_as_it_would_have_read_it(tmp_path):
    """A run CSV parsed once for the tables (`shared_run_frame`) gives replay the very columns, values,
    row numbers and hash its own read gives; replay alone never parses a shared frame."""
    from auditkit.package.columns import read_run_csv, shared_run_frame
    from auditkit.package.store import open_package
    from fixtures.synth import make_package

    pkg = make_package(tmp_path / "pkg")
    store = open_package(pkg)
    for path in sorted((pkg / "remote-results").glob("*_summary.csv")):
        rel = path.relative_to(pkg).as_posix()
        own, own_sha = read_run_csv(store, rel)
        assert shared_run_frame(store, rel, keep=False) == (None, None)
        frame, sha = shared_run_frame(store, rel)
        assert frame is not None and sha == own_sha
        got, got_sha = read_run_csv(store, rel)
        pd.testing.assert_frame_equal(got, own)
        assert got_sha == own_sha and "_row" not in frame.columns
