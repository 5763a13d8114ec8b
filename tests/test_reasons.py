"""Why each candidate fell: below the cut, displaced by always_keep (named), ineligible (cell and status)."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from auditkit.gates.reasons import reasons, reasons_of_document
from auditkit.gates.engine import decide_columns

CANDS = ["a", "b", "c", "d", "e"]


def rules(top_k=2, keep=(), cells=2):
    return {"gate": "g", "inputs": {"stages": ["s"], "hosts": [f"h{i}" for i in range(cells)], "seeds": [1],
                                    "candidates": CANDS},
            "metric": {"column": "val_bpb", "better": "lower"},
            "promote": {"top_k": top_k, "always_keep": list(keep)}, "checks": []}


def cols(values: dict[str, list[float]], status: dict[tuple[str, int], str] | None = None, drop=()):
    out = {k: [] for k in ("stage", "host", "seed", "config_id", "status", "value")}
    for cid, vs in values.items():
        for j, v in enumerate(vs):
            if (cid, j) in drop:
                continue
            out["stage"].append("s")
            out["host"].append(f"h{j}")
            out["seed"].append(1)
            out["config_id"].append(cid)
            st_ = (status or {}).get((cid, j), "ok")
            out["status"].append(st_)
            out["value"].append(v if st_ == "ok" else float("nan"))
    return out


VALUES = {"a": [1.0, 1.0], "b": [1.1, 1.1], "c": [1.2, 1.2], "d": [1.3, 1.3], "e": [1.4, 1.4]}


def test_below_the_cut_and_displaced_by_always_keep_named():
    r = rules(top_k=3, keep=["e"])
    d = decide_columns(r, cols(VALUES), CANDS)
    why = reasons(d, r)
    assert d.promoted == ("a", "b", "e")
    assert why["a"] == "promoted: rank 1 of 5 eligible, within top_k=3"
    assert why["e"] == "promoted by always_keep: rank 5 of 5 eligible, below the cut top_k=3"
    assert why["c"] == ("eliminated: rank 3 of 5 eligible is within top_k=3, but always_keep took the slot: "
                        "e (rank 5)")
    assert why["d"] == "eliminated: rank 4 of 5 eligible, below the cut top_k=3 (1 slot(s) held by always_keep: e)"


def test_always_keep_within_the_cut_is_said_so():
    r = rules(top_k=2, keep=["a"])
    why = reasons(decide_columns(r, cols(VALUES), CANDS), r)
    assert why["a"] == "promoted: rank 1 of 5 eligible, within top_k=2 (also in always_keep)"
    assert why["c"] == "eliminated: rank 3 of 5 eligible, below the cut top_k=2"


def test_ineligible_names_the_cell_and_status():
    r = rules(top_k=2, keep=["b"])
    d = decide_columns(r, cols(VALUES, status={("b", 1): "diverged"}, drop={("c", 0)}), CANDS)
    why = reasons(d, r)
    assert why["b"] == "ineligible: h1/1 diverged (always_keep promotes only eligible candidates)"
    assert why["c"] == "ineligible: h0/1 missing"
    assert d.promoted == ("a", "d")
    assert why["d"] == "promoted: rank 2 of 3 eligible, within top_k=2"


def test_document_form_gives_the_same_reasons_also_without_the_ineligible_key():
    r = rules(top_k=3, keep=["e"])
    d = decide_columns(r, cols(VALUES, status={("b", 1): "oom"}, drop={("c", 0)}), CANDS)
    doc = json.loads(json.dumps(d.to_json(rules_ref={"path": "r", "sha256": "0" * 64}, inputs=[], decided_at="x")))
    assert reasons_of_document(doc, r) == reasons(d, r)
    for c in doc["candidates"]:   # another writer records no "ineligible" text
        c.pop("ineligible", None)
        if not c["eligible"]:
            c["cells"] = {k: v for k, v in c["cells"].items() if v.get("status") != "missing"}
    other = reasons_of_document(doc, r)
    assert other["b"] == "ineligible: h1/1 oom"
    assert other["c"] == "ineligible: h0/1 missing"


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.integers(0, 20), min_size=3, max_size=3), min_size=5, max_size=5),
       st.integers(1, 5), st.lists(st.sampled_from(CANDS), max_size=3, unique=True))
def test_reasons_agree_with_the_engine(grid, top_k, keep):
    keep = keep[:top_k]
    r = rules(top_k=top_k, keep=keep, cells=3)
    values = {c: [1.0 + v / 100 for v in row] for c, row in zip(CANDS, grid)}
    d = decide_columns(r, cols(values), CANDS)
    why = reasons(d, r)
    assert set(why) == set(CANDS)
    for c in d.candidates:
        text = why[c.config_id]
        assert text.startswith("promoted") == (c.config_id in d.promoted)
        assert text.startswith("promoted by always_keep") == (c.config_id in keep and c.rank > top_k)
        displaced = text.startswith("eliminated") and "always_keep took the slot" in text
        assert displaced == (c.config_id not in d.promoted and c.rank <= top_k)
        if displaced:   # the names given are exactly the always_keep members promoted below the cut
            named = {x.config_id for x in d.candidates if x.config_id in keep and x.rank > top_k}
            assert all(f"{n} (rank " in text for n in named) and named
