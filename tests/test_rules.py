"""The gate engine (SPEC section 5): hand-computed fixtures, one per semantic point."""

from __future__ import annotations

import copy
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from auditkit.study.spec import load_manifest
from auditkit.package.rows import RunRow
from auditkit.gates.chain import ChainBound, chain_bound
from auditkit.gates.engine import DuplicateRowError, decide
from auditkit.gates.rules import CheckKind, round9, threshold_passes, validate_rules


def rules(top_k=2, keep=(), checks=(), hosts=("a", "b"), seeds=(1,), better="lower", candidates="matrix"):
    return {"schema": "auditkit/rules/v1", "gate": "g", "frozen_at": "2026-01-01T00:00:00Z",
            "inputs": {"stages": ["s"], "hosts": list(hosts), "seeds": list(seeds), "candidates": candidates},
            "metric": {"column": "val_bpb", "better": better},
            "promote": {"top_k": top_k, "always_keep": list(keep)}, "checks": list(checks)}


def row(host, cid, val, status="ok", seed=1, stage="s"):
    return RunRow(run_id=f"{host}-{cid}-{seed}-{stage}", host=host, stage=stage, seed=seed, config_id=cid,
                  status=status, val_bpb=val, training_seconds=60.0, started_at="2026-01-02T00:00:00Z",
                  finished_at="2026-01-02T00:01:00Z")


def grid(values: dict[str, tuple], hosts=("a", "b")):
    """Rows for {config: (value on host a, value on host b)}."""
    return [row(h, c, v) for c, vs in values.items() for h, v in zip(hosts, vs)]


# --------------------------------------------------------------------------- semantics

def test_tie_broken_by_config_id():
    d = decide(rules(top_k=1), grid({"zeta": (1.0, 1.0), "alpha": (1.0, 1.0), "mid": (1.1, 1.1)}),
               ["zeta", "alpha", "mid"])
    assert [c.config_id for c in d.candidates] == ["alpha", "zeta", "mid"]
    assert [c.rank for c in d.candidates] == [1, 2, 3]
    assert [cell.rank for cell in d.candidate("zeta").cells] == [2, 2]
    assert d.candidate("alpha").wins == 2 and d.candidate("zeta").wins == 0
    assert d.promoted == ("alpha",)


def test_diverged_run_makes_candidate_ineligible():
    rows = grid({"x": (1.0, 1.0), "y": (1.1, 1.1)}) + [row("a", "best", 0.5), row("b", "best", None, "diverged")]
    d = decide(rules(top_k=2, keep=["best"]), rows, ["x", "y", "best"])
    best = d.candidate("best")
    assert (best.eligible, best.rank, best.mean, best.wins) == (False, None, None, 0)
    assert best.cells[0].value == 0.5 and best.cells[0].rank is None
    assert best.cells[1].status == "diverged"
    assert "b/1 diverged" in best.reason
    assert d.promoted == ("x", "y")  # never promoted, even when always kept
    assert [c.config_id for c in d.candidates] == ["x", "y", "best"]  # ineligible listed last
    # the eligible are ranked as if it were not there
    assert d.candidate("x").cells[0].rank == 1


def test_non_finite_metric_makes_candidate_ineligible():
    rows = grid({"x": (1.0, 1.0)}) + [row("a", "y", float("nan")), row("b", "y", 1.0)]
    d = decide(rules(), rows, ["x", "y"])
    assert not d.candidate("y").eligible and "metric not finite" in d.candidate("y").reason


def test_missing_cell_makes_candidate_ineligible():
    rows = grid({"x": (1.0, 1.0)}) + [row("a", "y", 0.9)]
    d = decide(rules(), rows, ["x", "y"])
    assert not d.candidate("y").eligible
    assert d.candidate("y").cells[1].status == "missing"
    assert d.candidate("y").reason == "b/1 missing"
    assert d.promoted == ("x",)
    doc = d.to_json(rules_ref={"path": "r", "sha256": "0" * 64}, inputs=[], decided_at="2026-01-03T00:00:00Z")
    assert doc["candidates"][1]["cells"]["b/1"] == {"val_bpb": None, "rank": None, "status": "missing"}
    assert doc["candidates"][1]["rank"] is None


def test_gap_of_exactly_threshold_passes_by_rounding():
    assert 1.010000 - 1.000000 > 0.010  # the float difference alone would fail
    ne = {"kind": "near_equivalence", "candidate": "g", "reference": "r", "threshold": 0.010}
    mg = {"kind": "mean_gap", "candidate": "g", "reference": "r", "threshold": 0.010}
    d = decide(rules(checks=[ne, mg]), grid({"r": (1.000000, 1.000000), "g": (1.010000, 1.010000)}), ["r", "g"])
    assert [(c.value, c.passed) for c in d.checks] == [(0.01, True), (0.01, True)]
    d = decide(rules(checks=[ne, mg]), grid({"r": (1.000000, 1.000000), "g": (1.010001, 1.010001)}), ["r", "g"])
    assert [(c.value, c.passed) for c in d.checks] == [(0.010001, False), (0.010001, False)]


def test_rounding_is_half_even_at_nine_decimals():
    assert round9(0.0100000005) == 0.01      # half: to even (…0)
    assert round9(0.0100000015) == 0.010000002  # half: to even (…2)
    assert threshold_passes("near_equivalence", -0.01, 0.01)
    assert not threshold_passes("mean_gap", 0.010000001, 0.01)


def test_always_keep_takes_a_place():
    d = decide(rules(top_k=2, keep=["worst"]),
               grid({"best": (1.0, 1.0), "second": (1.1, 1.1), "worst": (1.3, 1.3)}), ["best", "second", "worst"])
    assert d.promoted == ("best", "worst")  # listed in order of rank
    assert d.candidate("worst").rank == 3


def test_check_on_an_ineligible_candidate_fails_with_no_value():
    checks = [{"kind": "near_equivalence", "candidate": "y", "reference": "x", "threshold": 0.5},
              {"kind": "mean_gap", "candidate": "x", "reference": "y", "threshold": 0.5},
              {"kind": "ranks_first_in_all_cells", "candidate": "y"}]
    rows = grid({"x": (1.0, 1.0)}) + [row("a", "y", 0.5), row("b", "y", None, "oom")]
    d = decide(rules(checks=checks), rows, ["x", "y"])
    assert [(c.value, c.passed) for c in d.checks] == [(None, False), (None, False), (None, False)]


def test_ranks_first_in_all_cells():
    check = {"kind": "ranks_first_in_all_cells", "candidate": "x"}
    d = decide(rules(checks=[check]), grid({"x": (1.0, 1.0), "y": (1.1, 1.1)}), ["x", "y"])
    assert (d.checks[0].value, d.checks[0].passed) == (2.0, True)
    d = decide(rules(checks=[check]), grid({"x": (1.0, 1.2), "y": (1.1, 1.1)}), ["x", "y"])
    assert (d.checks[0].value, d.checks[0].passed) == (1.0, False)


def test_statistics_and_higher_is_better():
    d = decide(rules(better="higher", top_k=1, checks=[{"kind": "mean_gap", "candidate": "lo", "reference": "hi",
                                                         "threshold": 0.1}]),
               grid({"hi": (2.0, 4.0), "lo": (1.0, 1.5)}), ["hi", "lo"])
    hi = d.candidate("hi")
    assert (hi.rank, hi.mean, hi.min, hi.max, hi.wins) == (1, 3.0, 2.0, 4.0, 2)
    assert hi.std == pytest.approx(2 ** 0.5)
    assert d.promoted == ("hi",)
    assert (d.checks[0].value, d.checks[0].passed) == (1.75, False)  # gap in the worse direction


def test_rows_outside_the_rules_are_left_out():
    rows = grid({"x": (1.0, 1.0), "y": (1.1, 1.1), "not_a_candidate": (0.1, 0.1)})
    rows += [row("a", "y", 0.1, stage="other"), row("c", "y", 0.1), row("a", "y", 0.1, seed=9)]
    d = decide(rules(), rows, ["x", "y"])
    assert [c.config_id for c in d.candidates] == ["x", "y"]
    assert d.cells == (("a", 1), ("b", 1))


def test_two_rows_of_one_candidate_in_one_cell_are_an_error():
    rows = grid({"x": (1.0, 1.0)}) + [row("a", "x", 1.2)]
    with pytest.raises(DuplicateRowError, match="'x' in cell a/1"):
        decide(rules(), rows, ["x"])


def test_every_check_kind_is_handled():
    for kind in CheckKind:
        check = {"kind": kind.value, "candidate": "y"}
        if kind.thresholded:
            check |= {"reference": "x", "threshold": 0.2}
        d = decide(rules(checks=[check]), grid({"x": (1.0, 1.0), "y": (1.1, 1.1)}), ["x", "y"])
        assert d.checks[0].kind == kind.value
        assert d.checks[0].passed is (kind is not CheckKind.RANKS_FIRST_IN_ALL_CELLS)


def test_to_json_is_valid_against_the_schema():
    from auditkit.package.schemas import schema_errors

    d = decide(rules(checks=[{"kind": "ranks_first_in_all_cells", "candidate": "x"}]),
               grid({"x": (1.0, 1.0), "y": (1.1, None)}), ["x", "y"])
    doc = d.to_json(rules_ref={"path": "preanalysis/g.rules.json", "sha256": "0" * 64},
                    inputs=[{"path": "remote-results/a_s_summary.csv", "sha256": "1" * 64}],
                    decided_at="2026-01-03T00:00:00Z")
    assert schema_errors(doc, "decision") == []


# --------------------------------------------------------------------------- order independence

cell_values = st.lists(st.tuples(st.sampled_from(["c1", "c2", "c3", "c4"]), st.sampled_from(["a", "b"]),
                                 st.sampled_from([1, 2]), st.sampled_from([1.0, 1.000001, 1.1, 0.9, None]),
                                 st.sampled_from(["ok", "ok", "ok", "diverged"])),
                       max_size=16, unique_by=lambda t: (t[0], t[1], t[2]))


@settings(max_examples=60, deadline=None)
@given(cell_values, st.randoms(use_true_random=False))
def test_decide_is_invariant_to_row_order(cells, rnd):
    rows = [row(h, c, v, status, seed=s) for c, h, s, v, status in cells]
    r = rules(top_k=2, keep=["c3"], seeds=(1, 2), checks=[
        {"kind": "near_equivalence", "candidate": "c2", "reference": "c1", "threshold": 0.05},
        {"kind": "ranks_first_in_all_cells", "candidate": "c1"}])
    first = decide(r, rows, ["c1", "c2", "c3", "c4"])
    shuffled = list(rows)
    rnd.shuffle(shuffled)
    assert decide(r, shuffled, ["c4", "c3", "c2", "c1"]) == first


# --------------------------------------------------------------------------- validation

def codes(findings):
    return sorted((f.code, f.location) for f in findings)


def test_valid_rules_have_no_findings():
    assert validate_rules(rules(keep=["x"]), "r.json", known_configs={"x", "y"}) == []


def test_schema_is_checked_before_sense():
    doc = rules()
    del doc["promote"]["top_k"]
    doc["promote"]["always_keep"] = ["x", "y", "z"]
    assert codes(validate_rules(doc, "r.json")) == [("schema-invalid", "$.promote")]


def test_sense_findings_name_the_key():
    doc = rules(top_k=1, keep=["x", "ghost"], checks=[
        {"kind": "near_equivalence", "candidate": "y", "reference": "nobody", "threshold": -0.1},
        {"kind": "median_gap", "candidate": "x"}])
    assert codes(validate_rules(doc, "r.json", known_configs={"x", "y"})) == [
        ("rules-always-keep-too-long", "$.promote.always_keep"),
        ("rules-negative-threshold", "$.checks[0].threshold"),
        ("rules-not-a-candidate", "$.checks[0].reference"),
        ("rules-not-a-candidate", "$.promote.always_keep[1]"),
        ("rules-unknown-check", "$.checks[1].kind"),
    ]


def test_explicit_candidates_bound_the_names():
    doc = rules(candidates=["x", "y"], checks=[{"kind": "ranks_first_in_all_cells", "candidate": "z"}])
    assert codes(validate_rules(doc, "r.json")) == [("rules-not-a-candidate", "$.checks[0].candidate")]
    doc = rules(candidates="promoted-by:earlier", checks=[{"kind": "ranks_first_in_all_cells", "candidate": "z"}])
    assert validate_rules(doc, "r.json") == []  # not known until the earlier gate decides


def test_paper06_rules_are_valid():
    m = load_manifest("manifests/paper06.toml")
    configs = {line.split(",")[0] for line in m.matrix_file.read_text().splitlines()[1:]}
    assert len(configs) == 12
    for gate, body in m.rules.items():
        doc = {"schema": "auditkit/rules/v1", "gate": gate, "frozen_at": "2026-04-28T09:00:00Z", **copy.deepcopy(body)}
        assert validate_rules(doc, gate, known_configs=configs) == [], gate
    assert [m.rules[g.gate]["promote"]["top_k"] for g in m.protocol.gates] == [9, 4, 3, 1]


def test_decide_is_deterministic_on_many_candidates():
    rnd = random.Random(5)
    values = {f"c{i:03d}": (round(rnd.uniform(1, 2), 6), round(rnd.uniform(1, 2), 6)) for i in range(200)}
    d1 = decide(rules(top_k=10), grid(values), list(values))
    d2 = decide(rules(top_k=10), list(reversed(grid(values))), sorted(values, reverse=True))
    assert d1 == d2 and len(d1.promoted) == 10


# --------------------------------------------------------------------------- the promoted-by chain

def chained(**gates):
    """Rules per gate: name -> candidates spec (the rest as `rules()`)."""
    out = {}
    for name, cands in gates.items():
        doc = rules(candidates=cands)
        doc["gate"] = name
        out[name] = doc
    return out


def test_chain_bound_follows_promoted_by_to_its_end():
    docs = chained(a="matrix", b="promoted-by:a", c="promoted-by:b", d=["x", "y"], e="promoted-by:d")
    assert chain_bound("c", docs.get, ["x", "y", "z"]) == ChainBound(frozenset({"x", "y", "z"}))
    assert chain_bound("c", docs.get, None) == ChainBound(None)          # the matrix is not known
    assert chain_bound("e", docs.get) == ChainBound(frozenset({"x", "y"}))
    assert chain_bound("f", docs.get) == ChainBound(None)                 # no such gate: no bound, no cycle
    cyc = chained(a="promoted-by:c", b="promoted-by:a", c="promoted-by:b", z="promoted-by:a")
    assert chain_bound("a", cyc.get).cycle == ("a", "c", "b", "a")
    assert chain_bound("z", cyc.get).cycle == ("a", "c", "b", "a")      # runs into it
    assert chain_bound("s", chained(s="promoted-by:s").get).cycle == ("s", "s")


def test_names_must_be_candidates_through_the_chain():
    docs = chained(a="matrix", b="promoted-by:a")
    doc = docs["b"]
    doc["promote"]["always_keep"] = ["ghost"]
    doc["checks"] = [{"kind": "near_equivalence", "candidate": "x", "reference": "nobody", "threshold": 0.01}]
    chain = chain_bound("b", docs.get, ["x", "y"])
    assert codes(validate_rules(doc, "b.json", known_configs=["x", "y"], chain=chain)) == [
        ("rules-not-a-candidate", "$.checks[0].reference"),
        ("rules-not-a-candidate", "$.promote.always_keep[0]"),
    ]
    doc["promote"]["always_keep"] = ["y"]
    doc["checks"][0]["reference"] = "y"
    assert validate_rules(doc, "b.json", chain=chain) == []
    assert validate_rules(doc, "b.json", chain=ChainBound(None)) == []  # unknown bound: nothing to say


def test_a_cycle_of_promoted_by_is_a_finding():
    cyc = chained(a="promoted-by:b", b="promoted-by:a")
    for name in ("a", "b"):
        (f,) = validate_rules(cyc[name], f"{name}.json", chain=chain_bound(name, cyc.get))
        assert (f.code, f.location) == ("rules-chain-cycle", "$.inputs.candidates")
        assert f.found == f"{name} -> {'b' if name == 'a' else 'a'} -> {name}"
    # a gate promoting its own candidates, with or without the chain resolved
    own = chained(s="promoted-by:s")["s"]
    assert codes(validate_rules(own, "s.json")) == [("rules-chain-cycle", "$.inputs.candidates")]
    assert codes(validate_rules(own, "s.json", chain=chain_bound("s", {"s": own}.get))) == [
        ("rules-chain-cycle", "$.inputs.candidates")]


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_a_threshold_that_is_not_finite_is_a_finding(bad):
    doc = rules(checks=[{"kind": "mean_gap", "candidate": "x", "reference": "y", "threshold": bad}])
    assert codes(validate_rules(doc, "r.json")) == [("rules-non-finite-threshold", "$.checks[0].threshold")]
    d = decide(doc, grid({"x": (1.0, 1.0), "y": (1.1, 1.1)}), ["x", "y"])
    assert d.checks[0].passed is False  # never a crash, never a pass


def test_frozen_at_must_be_a_time():
    doc = rules()
    doc["frozen_at"] = "2026-13-45T99:00:00Z"  # matches the schema's pattern, not its format: date-time
    assert codes(validate_rules(doc, "r.json")) == [("schema-invalid", "$.frozen_at")]


def _manifest(tmp_path, rules_toml: str) -> "Path":
    (tmp_path / "m.csv").write_text("config_id,role\nx,reference\ny,greedy\nz,screened\n")
    text = f"""name = "t"
matrix = "m.csv"
hosts = ["h"]
[[stages]]
stage = "s1"
budget = {{kind = "steps", value = 2}}
seeds = [1]
hosts = ["h"]
candidates = "matrix"
[[stages]]
stage = "s2"
budget = {{kind = "steps", value = 4}}
seeds = [2]
hosts = ["h"]
candidates = "promoted-by:g1"
[[gates]]
gate = "g1"
[gates.rules]
inputs = {{stages = ["s1"], hosts = ["h"], seeds = [1], candidates = "matrix"}}
metric = {{column = "val_bpb", better = "lower"}}
promote = {{top_k = 2, always_keep = []}}
checks = []
[[gates]]
gate = "g2"
[gates.rules]
{rules_toml}
metric = {{column = "val_bpb", better = "lower"}}
checks = [{{kind = "mean_gap", candidate = "y", reference = "x", threshold = THRESHOLD}}]
"""
    p = tmp_path / "m.toml"
    return p, text


@pytest.mark.parametrize("inputs,keep,threshold,refused", [
    ('candidates = "promoted-by:g1"', '["x"]', "0.02", None),
    ('candidates = "promoted-by:g1"', '["ghost"]', "0.02", "rules-not-a-candidate"),
    ('candidates = "promoted-by:g2"', '["x"]', "0.02", "rules-chain-cycle"),
    ('candidates = "promoted-by:g1"', '["x"]', "nan", "rules-non-finite-threshold"),
])
def test_a_manifest_is_refused_before_anything_runs(tmp_path, inputs, keep, threshold, refused):
    from auditkit.errors import AuditError

    p, text = _manifest(tmp_path, f'inputs = {{stages = ["s2"], hosts = ["h"], seeds = [2], {inputs}}}\n'
                                  f"promote = {{top_k = 1, always_keep = {keep}}}")
    p.write_text(text.replace("THRESHOLD", threshold))
    if refused is None:
        assert [g.gate for g in load_manifest(p).protocol.gates] == ["g1", "g2"]
        return
    with pytest.raises(AuditError, match=refused) as exc:
        load_manifest(p)
    assert "gates[1].rules" in str(exc.value)
