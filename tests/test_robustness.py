"""Robustness per gate: resampling cells (and evaluation noise) through the engine, checked against
hand-computed and independent reference values; byte-stable tables with `--check`."""

from __future__ import annotations

import math
import shutil
from itertools import combinations_with_replacement, permutations
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from auditkit.report import robustness as rb
from auditkit.report.gates import decide_all
from auditkit.gates.engine import decide_columns
from auditkit.derived.tables import TableKind, build_tables, check_tables
from fixtures.paperpkg import build_paper_package


def rules(cands, cells, top_k=1, keep=(), checks=()):
    return {"gate": "g", "inputs": {"stages": ["s"], "hosts": [f"h{j}" for j in range(cells)], "seeds": [1],
                                    "candidates": list(cands)},
            "metric": {"column": "val_bpb", "better": "lower"},
            "promote": {"top_k": top_k, "always_keep": list(keep)}, "checks": list(checks)}


def decide(values: dict[str, list[float]], **kw):
    cands = list(values)
    n = len(next(iter(values.values())))
    r = rules(cands, n, **kw)
    c = {"stage": [], "host": [], "seed": [], "config_id": [], "status": [], "value": []}
    for cid, vs in values.items():
        for j, v in enumerate(vs):
            for k, x in zip(c, ("s", f"h{j}", 1, cid, "ok", v)):
                c[k].append(x)
    return r, decide_columns(r, c, cands)


def test_two_cells_by_hand():
    # a: 1.0 and 1.3; b: 1.2 and 1.2. Resamples {1,1} (1/4): a wins; {1,2} (1/2): a mean 1.15 wins; {2,2} (1/4): b.
    r, d = decide({"a": [1.0, 1.3], "b": [1.2, 1.2]},
                  checks=[{"kind": "near_equivalence", "candidate": "b", "reference": "a", "threshold": 0.1}])
    g = rb.gate_robustness(r, d)
    assert g.method == "exact bootstrap over 2 cells (3 distinct resamples)" and g.resamples == 3
    rows = {x.config_id: x for x in g.rows}
    assert rows["a"].p_promoted == pytest.approx(0.75) and rows["b"].p_promoted == pytest.approx(0.25)
    assert (rows["a"].rank_lo, rows["a"].rank_hi) == (1, 2)
    # check value b - a: {1,1}: 0.2 (FAIL), {1,2}: 0.05 (pass), {2,2}: -0.1 (pass); observed 0.05 pass -> flips 1/4
    (ch,) = g.checks
    assert ch.passed and ch.p_flip == pytest.approx(0.25)
    assert (ch.value_lo, ch.value_hi) == (pytest.approx(-0.1), pytest.approx(0.2))
    # margin: a promoted, b first eliminated; paired differences b - a = 0.2, -0.1
    assert (g.last_promoted, g.first_eliminated) == ("a", "b")
    assert g.margin == pytest.approx(0.05)
    assert g.noise == pytest.approx(stats.sem([0.2, -0.1]))
    assert g.margin_in_noise == pytest.approx(0.05 / stats.sem([0.2, -0.1]))
    assert g.p_one_sided == pytest.approx(stats.ttest_rel([1.2, 1.2], [1.0, 1.3], alternative="greater").pvalue)


def reference_p_promoted(values: dict[str, list[float]], top_k: int) -> dict[str, float]:
    """Exact bootstrap by brute force: every multiset, multinomial weight, top_k by mean."""
    n = len(next(iter(values.values())))
    p = Counter()
    for combo in combinations_with_replacement(range(n), n):
        w = math.factorial(n) / math.prod(math.factorial(m) for m in Counter(combo).values()) / n ** n
        means = {c: sum(v[j] for j in combo) / n for c, v in values.items()}
        for c in sorted(means, key=lambda c: (means[c], c))[:top_k]:
            p[c] += w
    return p


def random_values(n_cands: int, n_cells: int, seed: int) -> dict[str, list[float]]:
    rng = np.random.default_rng(seed)
    q = np.linspace(0, 0.01, n_cands)
    return {f"c{i}": [round(1.0 + q[i] + x, 6) for x in rng.normal(0, 0.01, n_cells)] for i in range(n_cands)}


def test_exact_bootstrap_equals_brute_force_reference():
    values = random_values(5, 4, 1)
    r, d = decide(values, top_k=2)
    g = rb.gate_robustness(r, d)
    assert g.resamples == 35
    ref = reference_p_promoted(values, 2)
    for row in g.rows:
        assert row.p_promoted == pytest.approx(ref[row.config_id], abs=1e-12)
    assert math.fsum(x.p_promoted for x in g.rows) == pytest.approx(2.0)


def test_monte_carlo_bootstrap_is_seeded_and_close_to_exact():
    values = random_values(4, 8, 2)   # 6435 multisets > EXACT_LIMIT: drawn
    r, d = decide(values, top_k=2)
    g = rb.gate_robustness(r, d)
    assert g.method == f"bootstrap over 8 cells ({rb.RESAMPLES} draws, seed {rb.SEED})"
    assert rb.gate_robustness(r, d) == g   # deterministic
    ref = reference_p_promoted(values, 2)
    for row in g.rows:
        assert abs(row.p_promoted - ref[row.config_id]) < 0.05


def test_evaluation_noise_is_resampled_when_rows_carry_standard_errors(monkeypatch):
    monkeypatch.setattr(rb, "RESAMPLES", 400)
    values = {"a": [1.00, 1.00, 1.00, 1.00], "b": [1.01, 1.01, 1.01, 1.01]}
    r, d = decide(values)
    quiet = rb.gate_robustness(r, d)
    assert {x.config_id: x.p_promoted for x in quiet.rows} == {"a": 1.0, "b": 0.0}
    assert quiet.noise is None   # identical paired differences: no noise across cells
    se = np.full((2, 4), 0.02)
    noisy = rb.gate_robustness(r, d, se)
    assert noisy.method.startswith("bootstrap over 4 cells and evaluation noise")
    p_b = {x.config_id: x.p_promoted for x in noisy.rows}["b"]
    # mean over 4 draws: difference ~ N(0.01, 0.02*sqrt(2)/2) -> P(b ahead) = Phi(-0.01/0.01414) = 0.24
    assert 0.14 < p_b < 0.34   # 400 draws: +- 3 standard deviations
    assert noisy.noise_source == "evaluation standard errors"
    assert noisy.noise == pytest.approx(math.sqrt(4 * (0.02 ** 2 + 0.02 ** 2)) / 4)
    assert rb.gate_robustness(r, d, se) == noisy


def test_sensitivity_to_top_k_and_always_keep():
    values = {"a": [1.0, 1.0], "b": [1.1, 1.1], "c": [1.2, 1.2]}
    r, d = decide(values, top_k=2, keep=["c"])
    g = rb.gate_robustness(r, d)
    rows = {v: p for v, _, _, p in g.sensitivity}
    assert rows == {"top_k=1": ("c",), "frozen": ("a", "c"), "top_k=3": ("a", "b", "c"), "no always_keep": ("a", "b")}
    # last promoted on its rank is a (c is kept), first eliminated b
    assert (g.last_promoted, g.first_eliminated) == ("a", "b")


def test_a_gate_too_large_to_resample_says_so(monkeypatch):
    monkeypatch.setattr(rb, "MAX_ENTRIES", 5)
    r, d = decide(random_values(3, 2, 3))
    g = rb.gate_robustness(r, d)
    assert g.method == "not resampled" and g.note == "3 candidates x 2 cells exceeds 5 values" and g.rows == ()


def test_correlation_interval_against_scipy():
    a, b = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0], [2.0, 1.0, 4.0, 3.0, 7.0, 5.0, 6.0]
    ci = rb.correlation_interval(a, b, "k")
    assert ci.spearman == pytest.approx(stats.spearmanr(a, b).statistic)
    assert ci.ci_low <= ci.spearman <= ci.ci_high
    assert ci.ci_method.startswith("bootstrap over 7 candidates (1000 draws")
    # exact permutation p: share of the 5040 pairings with rho at least the observed one
    rhos = [stats.spearmanr(a, p).statistic for p in permutations(b)]
    assert ci.p_permutation == pytest.approx(sum(r >= ci.spearman - 1e-12 for r in rhos) / len(rhos))
    assert rb.correlation_interval(a, b, "k") == ci


def test_three_candidates_say_little():
    ci = rb.correlation_interval([1.0, 2.0, 3.0], [1.5, 2.5, 3.5], "k")
    assert ci.spearman == 1.0
    assert ci.p_permutation == pytest.approx(1 / 6)   # perfect agreement of 3 happens by chance 1 time in 6
    assert ci.ci_method == "exact bootstrap over 3 candidates (27 resamples, 24 with both rankings defined)"
    assert rb.correlation_interval([1.0, 2.0], [1.0, 2.0], "k").ci_low is None


@pytest.fixture(scope="module")
def paper_pkg(tmp_path_factory) -> Path:
    return build_paper_package(tmp_path_factory.mktemp("paper") / "pkg")


def test_robustness_tables_are_registered_byte_stable_and_checked(paper_pkg, tmp_path):
    assert TableKind.ROBUSTNESS.value == "robustness"
    ids = {t.id for t in build_tables(paper_pkg) if t.kind == "robustness"}
    assert ids == {"robustness", "robustness_checks", "robustness_gates", "promotion_sensitivity",
                   "host_correlation_interval"}
    assert check_tables(paper_pkg).ok   # regenerated in this process == written when the package was built
    gates = (paper_pkg / "analysis/robustness_gates.csv").read_text()
    assert "stage3,4,3,3,exact bootstrap over 4 cells (35 distinct resamples),35,bridge,greedy," in gates
    pkg = Path(shutil.copytree(paper_pkg, tmp_path / "pkg"))
    p = pkg / "analysis/robustness.csv"
    p.write_text(p.read_text().replace("stage3,bridge,1,true,1.000000", "stage3,bridge,1,true,0.900000"))
    rep = check_tables(pkg)
    assert [f.code for f in rep.findings] == ["table-differs"]
    assert rep.findings[0].path == "analysis/robustness.csv"


def test_noise_tables_are_seeded_and_checked(tmp_path, monkeypatch):
    monkeypatch.setattr(rb, "RESAMPLES", 100)
    pkg = build_paper_package(tmp_path / "pkg", se=0.004)
    assert check_tables(pkg).ok
    gates = (pkg / "analysis/robustness_gates.csv").read_text()
    assert "bootstrap over 4 cells and evaluation noise (100 draws, seed 20260502)" in gates
    out = decide_all(pkg)
    s2 = rb.gate_robustness(out["stage2"].rules, out["stage2"].decision, out["stage2"].se)
    checks = {c.kind: c for c in s2.checks}
    # greedy's 0.0134 gap against a 0.010 threshold, each value with se 0.004: the FAIL flips sometimes
    assert 0.0 < checks["near_equivalence"].p_flip < 0.5
    assert {r.config_id: r.p_promoted for r in s2.rows}["bridge"] == 1.0   # always_keep


def test_paper_gates_robustness(paper_pkg):
    out = decide_all(paper_pkg)
    s2 = rb.gate_robustness(out["stage2"].rules, out["stage2"].decision, out["stage2"].se)
    assert out["stage2"].se is None and s2.resamples == 35
    checks = {c.kind: c for c in s2.checks}
    assert checks["ranks_first_in_all_cells"].passed and checks["ranks_first_in_all_cells"].p_flip == 0.0
    assert s2.first_eliminated == "s01_d8_ar64" and s2.last_promoted == "d8_ar48"
    assert s2.margin_in_noise > 3


def test_an_undecidable_gate_is_a_row_with_the_reason(paper_pkg, tmp_path):
    pkg = Path(shutil.copytree(paper_pkg, tmp_path / "pkg"))
    (pkg / "remote-results/linux_stage3_12h_seed46_anchor3_summary.csv").unlink()
    gates = {t.id: t for t in build_tables(pkg)}["robustness_gates"]
    row = next(r for r in gates.rows if r[0] == "stage3")
    assert row[4] == "not resampled"
    assert row[-1] == ("could not be decided: input run CSV missing: "
                       "remote-results/linux_stage3_12h_seed46_anchor3_summary.csv")
