"""A package from another lab's scripts: SPEC v1, written here by a minimal writer of its own
(plain json/csv/hashlib/statistics, nothing of auditkit's), using the *other* v1 form of every
field the SPEC leaves open (docs/SPEC.md, "v1.1: representations"). Replay must call it
identical, and still catch a real difference in what SPEC v1 defines."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import statistics
from pathlib import Path

import pytest
from click.testing import CliRunner

from auditkit.cli import cli

HOSTS = ["windows", "linux"]  # protocol order, not sorted: the writer lists cells this way
MATRIX = ["zeta", "alpha", "bridge", "mid", "fragile"]
COLUMNS = ["run_id", "host", "stage", "seed", "config_id", "budget_kind", "budget_value", "status", "val_bpb",
           "training_seconds", "total_seconds", "num_steps", "total_tokens_M", "num_params_M", "peak_vram_mb",
           "mfu_percent", "started_at", "finished_at", "runner_sha256", "checkpoint", "checkpoint_sha256"]
# val_bpb per (config, host, seed); None: the run diverged
VALUES = {
    "s1": {"zeta": [0.91, 0.92, 0.90, 0.93], "alpha": [0.95, 0.94, 0.96, 0.95], "bridge": [0.90, 0.91, 0.92, 0.90],
           "mid": [0.99, 0.98, 0.97, 0.99], "fragile": [0.80, None, 0.81, 0.80]},
    "s2": {"zeta": [0.85], "bridge": [0.84]},
}
SEEDS = {"s1": [1, 2], "s2": [3]}
STAGE_HOSTS = {"s1": HOSTS, "s2": ["linux"]}  # s2: one cell, so no sample std


def rules_docs() -> dict[str, dict]:
    return {
        "g1": {"schema": "auditkit/rules/v1", "gate": "g1", "frozen_at": "2026-01-01T08:00:00+00:00",
               "inputs": {"stages": ["s1"], "hosts": HOSTS, "seeds": SEEDS["s1"], "candidates": "matrix"},
               "metric": {"column": "val_bpb", "better": "lower"},
               "promote": {"top_k": 2, "always_keep": ["bridge", "fragile"]},
               "checks": [{"kind": "near_equivalence", "candidate": "zeta", "reference": "alpha", "threshold": 0.01},
                          {"kind": "mean_gap", "candidate": "zeta", "reference": "bridge", "threshold": 0.02},
                          {"kind": "ranks_first_in_all_cells", "candidate": "bridge"},
                          {"kind": "ranks_first_in_all_cells", "candidate": "fragile"},
                          {"kind": "near_equivalence", "candidate": "fragile", "reference": "zeta", "threshold": 0.5}]},
        "g2": {"schema": "auditkit/rules/v1", "gate": "g2", "frozen_at": "2026-01-02T08:00:00+00:00",
               "inputs": {"stages": ["s2"], "hosts": STAGE_HOSTS["s2"], "seeds": SEEDS["s2"],
                          "candidates": "promoted-by:g1"},
               "metric": {"column": "val_bpb", "better": "lower"},
               "promote": {"top_k": 1},
               "checks": [{"kind": "ranks_first_in_all_cells", "candidate": "bridge"}]},
    }


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write(root: Path, rel: str, data: bytes) -> None:
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)


def run_rows(stage: str, day: int) -> dict[str, list[dict]]:
    """Rows per host; cell order host-major as VALUES lists them (host, seed)."""
    by_host = {h: [] for h in STAGE_HOSTS[stage]}
    n = 0
    for cid, vals in VALUES[stage].items():
        cells = [(h, s) for h in STAGE_HOSTS[stage] for s in SEEDS[stage]]
        for (h, s), v in zip(cells, vals):
            n += 1
            by_host[h].append({
                "run_id": f"{stage}-{h}-{cid}-{s}", "host": h, "stage": stage, "seed": str(s), "config_id": cid,
                "budget_kind": "steps", "budget_value": "10", "status": "ok" if v is not None else "diverged",
                "val_bpb": "" if v is None else f"{v:.6f}", "training_seconds": "1.0", "total_seconds": "2.0",
                "num_steps": "10", "total_tokens_M": "0.1", "num_params_M": "1.0", "peak_vram_mb": "0",
                "mfu_percent": "0", "started_at": f"2026-01-0{day}T09:{n:02d}:00+00:00",
                "finished_at": f"2026-01-0{day}T09:{n:02d}:30+00:00", "runner_sha256": "b" * 64,
                "checkpoint": "", "checkpoint_sha256": ""})
    return by_host


def csv_bytes(rows: list[dict]) -> bytes:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue().encode()


def decide(rules: dict, rows: list[dict], candidates: list[str]) -> dict:
    """SPEC section 5, written from the text alone; returns the decision's body."""
    ins = rules["inputs"]
    cells = [(h, s) for h in ins["hosts"] for s in ins["seeds"]]
    table = {}
    for r in rows:
        if r["stage"] in ins["stages"] and r["host"] in ins["hosts"] and int(r["seed"]) in ins["seeds"] \
                and r["config_id"] in candidates:
            v = float(r["val_bpb"]) if r["val_bpb"] else None
            table[(r["config_id"], r["host"], int(r["seed"]))] = (r["status"], v)
    eligible = [c for c in candidates if all(
        (c, h, s) in table and table[(c, h, s)][0] == "ok" and table[(c, h, s)][1] is not None
        and math.isfinite(table[(c, h, s)][1]) for h, s in cells)]
    rank_in = {}
    for h, s in cells:
        order = sorted(eligible, key=lambda c: (table[(c, h, s)][1], c))
        for k, c in enumerate(order):
            rank_in[(c, h, s)] = k + 1
    means = {c: statistics.fmean(table[(c, h, s)][1] for h, s in cells) for c in eligible}
    order = sorted(eligible, key=lambda c: (means[c], c))
    keep = [c for c in rules["promote"].get("always_keep", []) if c in eligible]
    chosen = list(keep)
    for c in order:
        if len(chosen) >= rules["promote"]["top_k"]:
            break
        if c not in chosen:
            chosen.append(c)
    promoted = [c for c in order if c in chosen]
    out = []
    for c in sorted(candidates):  # the other form: by config_id, not by rank
        if c not in eligible:
            out.append({"config_id": c, "eligible": False, "cells": {}, "wins": None})  # no rank/mean keys at all
            continue
        vals = [table[(c, h, s)][1] for h, s in cells]
        out.append({"config_id": c, "eligible": True, "rank": float(order.index(c) + 1),  # 1.0: one number type
                    "mean": means[c], "min": min(vals), "max": max(vals),  # unrounded
                    "wins": sum(rank_in[(c, h, s)] == 1 for h, s in cells),
                    "cells": {f"{h}/{s}": {"val_bpb": table[(c, h, s)][1], "rank": rank_in[(c, h, s)]}
                              for h, s in reversed(cells)},
                    **({"std": statistics.stdev(vals)} if len(vals) > 1 else {})})  # std absent for one cell
    checks = []
    for ch in reversed(rules["checks"]):  # recorded in another order
        c = ch["candidate"]
        if ch["kind"] == "ranks_first_in_all_cells":
            ok = c in eligible and all(rank_in[(c, h, s)] == 1 for h, s in cells)
            checks.append({"kind": ch["kind"], "candidate": c, "value": None, "passed": ok})  # value: null
            continue
        ref = ch["reference"]
        gap = round(means[c] - means[ref], 9) if c in eligible and ref in eligible else None
        passed = gap is not None and (abs(gap) if ch["kind"] == "near_equivalence" else gap) <= ch["threshold"]
        value = abs(gap) if gap is not None and ch["kind"] == "near_equivalence" else gap  # |gap|
        d = {"kind": ch["kind"], "candidate": c, "reference": ref, "threshold": ch["threshold"], "passed": passed}
        if value is not None:
            d["value"] = value  # no value: the key left out
        checks.append(d)
    return {"cells": [[h, s] for h, s in cells], "candidates": out, "promoted": promoted, "checks": checks}


def write_foreign_package(root: Path) -> Path:
    protocol = {"schema": "auditkit/protocol/v1", "name": "another-lab", "matrix": "matrices/m.csv", "hosts": HOSTS,
                "stages": [{"stage": "s1", "budget": {"kind": "steps", "value": 10}, "seeds": SEEDS["s1"],
                            "hosts": HOSTS, "candidates": "matrix"},
                           {"stage": "s2", "budget": {"kind": "steps", "value": 10}, "seeds": SEEDS["s2"],
                            "hosts": STAGE_HOSTS["s2"], "candidates": "promoted-by:g1"}],
                "gates": [{"gate": g, "rules": f"preanalysis/{g}.rules.json"} for g in ("g1", "g2")]}
    write(root, "protocol.json", json.dumps(protocol).encode())
    write(root, "matrices/m.csv", ("config_id,role,depth\n" + "".join(f"{c},screened,4\n" for c in MATRIX)).encode())
    candidates = {"g1": MATRIX}
    for day, (gate, rules) in enumerate(rules_docs().items(), start=1):
        rules_bytes = json.dumps(rules, indent=4).encode()
        write(root, f"preanalysis/{gate}.rules.json", rules_bytes)
        stage = rules["inputs"]["stages"][0]
        inputs, rows = [], []
        for h, hrows in run_rows(stage, day).items():
            rel = f"remote-results/{h}_{stage}_summary.csv"
            data = csv_bytes(hrows)
            write(root, rel, data)
            inputs.append({"path": rel, "sha256": sha(data)})
            rows += hrows
        body = decide(rules, rows, candidates[gate])
        doc = {"schema": "auditkit/decision/v1", "gate": gate,
               "rules": {"path": f"preanalysis/{gate}.rules.json", "sha256": sha(rules_bytes)},
               "inputs": inputs,  # protocol host order, not sorted
               **body, "decided_at": f"2026-01-0{day}T20:00:00+00:00", "writer": "another lab's scripts"}
        write(root, f"analysis/{gate}_decision.json", json.dumps(doc).encode())
        candidates["g2"] = body["promoted"]
    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    entries = [{"path": f, "sha256": sha((root / f).read_bytes()), "bytes": (root / f).stat().st_size} for f in files]
    root_hash = sha("".join(f"{e['sha256']}  {e['path']}\n" for e in entries).encode())
    write(root, "MANIFEST.json", json.dumps({"schema": "auditkit/manifest/v1", "algorithm": "sha256",
                                             "files": entries, "root": root_hash}).encode())
    write(root, "MANIFEST.csv", ("path,sha256,bytes\n" + "".join(f"{e['path']},{e['sha256']},{e['bytes']}\n"
                                                                  for e in entries)).encode())
    return root


@pytest.fixture
def foreign(tmp_path) -> Path:
    return write_foreign_package(tmp_path / "foreign")


def replay(pkg: Path) -> tuple[int, dict]:
    res = CliRunner().invoke(cli, ["replay-gate", "all", "--package", str(pkg), "--json"])
    return res.exit_code, json.loads(res.output)


def test_the_writer_uses_the_other_forms(foreign):
    """The fixture exercises what it claims to: guards the test against a writer that drifted."""
    g1 = json.loads((foreign / "analysis/g1_decision.json").read_text())
    fragile = next(c for c in g1["candidates"] if c["config_id"] == "fragile")
    assert fragile == {"config_id": "fragile", "eligible": False, "cells": {}, "wins": None}
    assert [c["config_id"] for c in g1["candidates"]] == sorted(MATRIX)
    assert g1["cells"][0] == ["windows", 1]
    firsts = [c for c in g1["checks"] if c["kind"] == "ranks_first_in_all_cells"]
    assert firsts and all(c["value"] is None for c in firsts)
    near = next(c for c in g1["checks"] if c["kind"] == "near_equivalence" and c["candidate"] == "zeta")
    assert near["value"] == pytest.approx(0.035)  # |gap|; the signed gap (auditkit's form) is -0.035
    assert all("value" not in c for c in g1["checks"] if c.get("reference") and c["candidate"] == "fragile")
    g2 = json.loads((foreign / "analysis/g2_decision.json").read_text())
    assert all("std" not in c for c in g2["candidates"])  # one cell per host, one seed: std left out


def test_a_foreign_v1_package_replays_identically(foreign):
    code, doc = replay(foreign)
    assert code == 0, doc["findings"]
    assert [(g["gate"], g["verdict"]) for g in doc["gates"]] == [("g1", "identical"), ("g2", "identical")]
    g1 = doc["gates"][0]["replayed"]
    assert g1["promoted"] == ["bridge", "zeta"] and g1["eligible"]["fragile"] is False


def test_a_foreign_v1_package_verifies(foreign):
    res = CliRunner().invoke(cli, ["verify", str(foreign)])
    assert res.exit_code == 0, res.output


def _edit(rel: str, fn):
    def apply(pkg: Path) -> None:
        p = pkg / rel
        doc = json.loads(p.read_text())
        fn(doc)
        p.write_text(json.dumps(doc))
    return apply


def _cand(doc: dict, cid: str) -> dict:
    return next(c for c in doc["candidates"] if c["config_id"] == cid)


def _check(doc: dict, kind: str, cid: str) -> dict:
    return next(c for c in doc["checks"] if c["kind"] == kind and c["candidate"] == cid)


G1 = "analysis/g1_decision.json"
# a real difference in what SPEC v1 defines, and the finding (code, location prefix) it must give
DIFFERENCES = {
    "promoted-order": (_edit(G1, lambda d: d["promoted"].reverse()), "promoted-differs", "$.promoted"),
    "eligible-wins-null": (_edit(G1, lambda d: _cand(d, "bridge").update(wins=None)), "wins-differs", "$.candidates[1].wins"),
    "ineligible-ranked": (_edit(G1, lambda d: _cand(d, "fragile").update(rank=5)), "rank-differs", "$.candidates[2].rank"),
    "ineligible-wins-one": (_edit(G1, lambda d: _cand(d, "fragile").update(wins=1)), "wins-differs", "$.candidates[2].wins"),
    "ineligible-cell-value": (_edit(G1, lambda d: _cand(d, "fragile")["cells"].update({"linux/1": {"val_bpb": 0.7}})),
                              "value-differs", "$.candidates[2].cells.linux/1.val_bpb"),
    "ineligible-cell-unknown": (_edit(G1, lambda d: _cand(d, "fragile")["cells"].update({"mars/1": {"val_bpb": None}})),
                                "decision-differs", "$.candidates[2].cells"),
    "first-places-miscounted": (_edit(G1, lambda d: _check(d, "ranks_first_in_all_cells", "bridge").update(value=4)),
                                "check-value-differs", "$.checks[2].value"),
    "first-places-of-ineligible": (_edit(G1, lambda d: _check(d, "ranks_first_in_all_cells", "fragile").update(value=2)),
                                   "check-value-differs", "$.checks[1].value"),
    "gap-magnitude": (_edit(G1, lambda d: _check(d, "near_equivalence", "zeta").update(value=0.5)),
                      "check-value-differs", "$.checks[4].value"),
    "mean-gap-sign": (_edit(G1, lambda d: _check(d, "mean_gap", "zeta").update(value=-_check(d, "mean_gap", "zeta")["value"])),
                      "check-value-differs", "$.checks[3].value"),
    "check-outcome": (_edit(G1, lambda d: _check(d, "near_equivalence", "zeta").update(passed=True)),
                      "check-outcome-differs", "$.checks[4].passed"),
    "value-for-no-value": (_edit(G1, lambda d: _check(d, "near_equivalence", "fragile").update(value=0.0)),
                           "check-value-differs", "$.checks[0].value"),
    "check-left-out": (_edit(G1, lambda d: d["checks"].pop(2)), "checks-differ", "$.checks"),
    "cell-left-out": (_edit(G1, lambda d: d["cells"].pop()), "decision-differs", "$.cells"),
    "cell-rank": (_edit(G1, lambda d: _cand(d, "zeta")["cells"]["linux/2"].update(rank=3.0)), "rank-differs",
                  "$.candidates[4].cells.linux/2.rank"),
    "mean-beyond-1e-9": (_edit(G1, lambda d: _cand(d, "alpha").update(mean=_cand(d, "alpha")["mean"] + 2e-9)),
                         "value-differs", "$.candidates[0].mean"),
    "rank-true": (_edit(G1, lambda d: _cand(d, "bridge").update(rank=True)), "schema-invalid", "$.candidates[1].rank"),
}


@pytest.mark.parametrize("name", sorted(DIFFERENCES))
def test_a_real_difference_in_a_foreign_package_is_still_caught(foreign, name):
    edit, code, location = DIFFERENCES[name]
    edit(foreign)
    exit_code, doc = replay(foreign)
    assert exit_code == 1
    hits = [(f["code"], f["location"]) for f in doc["findings"] if f["path"] == G1]
    assert (code, location) in hits, hits


def _ineligible(d: dict) -> dict:
    return _cand(d, "fragile")


# each open representation alone, applied to auditkit's own form of the decision
ONE_FORM = {
    "first-places-null": lambda d: [c.update(value=None) for c in d["checks"] if c["kind"] == "ranks_first_in_all_cells"],
    "ineligible-cells-empty": lambda d: _ineligible(d).update(cells={}),
    "ineligible-cells-some": lambda d: _ineligible(d).update(cells={"linux/1": {"val_bpb": 0.81}}),
    "ineligible-wins-null": lambda d: _ineligible(d).update(wins=None),
    "ineligible-wins-absent": lambda d: _ineligible(d).pop("wins"),
    "ineligible-stats-absent": lambda d: [_ineligible(d).pop(k) for k in ("rank", "mean", "min", "max", "std")],
    "candidates-by-config-id": lambda d: d["candidates"].sort(key=lambda c: c["config_id"]),
    "cells-any-order": lambda d: d["cells"].reverse(),
    "inputs-any-order": lambda d: d["inputs"].reverse(),
    "checks-any-order": lambda d: d["checks"].reverse(),
    "first-places-no-threshold-key": lambda d: [c.pop("threshold") for c in d["checks"]
                                                if c["kind"] == "ranks_first_in_all_cells"],
    "no-value-key": lambda d: [c.pop("value") for c in d["checks"] if c["value"] is None],
    "near-equivalence-absolute": lambda d: [c.update(value=abs(c["value"])) for c in d["checks"]
                                            if c["kind"] == "near_equivalence" and c["value"] is not None],
    "integral-floats": lambda d: [c.update(rank=float(c["rank"]), wins=float(c["wins"])) for c in d["candidates"]
                                  if c["eligible"]],
    "unrounded-mean": lambda d: _cand(d, "zeta").update(mean=_cand(d, "zeta")["mean"] + 4e-10),
    "extra-keys": lambda d: [d.update(writer="x"), _ineligible(d).pop("ineligible", None),
                             _cand(d, "zeta")["cells"]["linux/1"].update(note="x")],
}


@pytest.mark.parametrize("name", sorted(ONE_FORM))
def test_each_open_representation_alone_is_no_difference(foreign, name):
    from auditkit.gates.diff import diff_decisions
    from auditkit.gates.replay import decide_gate

    ours = decide_gate(foreign, "g1", "2026-01-01T20:00:00Z")
    near = next(c for c in ours["checks"] if c["kind"] == "near_equivalence" and c["candidate"] == "zeta")
    assert near["value"] < 0  # auditkit's form is the signed gap: the absolute one is the other form
    other = json.loads(json.dumps(ours))
    ONE_FORM[name](other)
    assert json.dumps(other, sort_keys=True) != json.dumps(ours, sort_keys=True)  # the form did change
    assert diff_decisions(other, ours, G1) == []
