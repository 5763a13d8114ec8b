"""Robustness per gate: resampling cells (and evaluation noise) through the engine, checked against
hand-computed and independent reference values; byte-stable tables with `--check`."""

from __future__ import annotations

import math
import shutil
from itertools import combinations_with_replacement, permutations, product
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from auditkit.derived import resampling as rb
from auditkit.stats import correlation as rc
from auditkit.gates.outcomes import decide_all
from auditkit.gates.engine import decide_columns
from auditkit.derived.tables import TableKind, build_tables, check_tables
from fixtures.paperpkg import build_paper_package


def rules(cands, cells, top_k=1, keep=(), checks=(), hosts=None):
    """`cells` cells: one per host (h0..), or with `hosts`, that many hosts of cells // hosts seeds."""
    nh = cells if hosts is None else hosts
    return {"gate": "g", "inputs": {"stages": ["s"], "hosts": [f"h{j}" for j in range(nh)],
                                    "seeds": list(range(1, cells // nh + 1)), "candidates": list(cands)},
            "metric": {"column": "val_bpb", "better": "lower"},
            "promote": {"top_k": top_k, "always_keep": list(keep)}, "checks": list(checks)}


def decide(values: dict[str, list[float]], hosts=None, **kw):
    """Values per candidate in cell order h0/1, h0/2, ..., h1/1, ... (hosts x seeds)."""
    cands = list(values)
    n = len(next(iter(values.values())))
    r = rules(cands, n, hosts=hosts, **kw)
    seeds = r["inputs"]["seeds"]
    c = {"stage": [], "host": [], "seed": [], "config_id": [], "status": [], "value": []}
    for cid, vs in values.items():
        for j, v in enumerate(vs):
            for k, x in zip(c, ("s", f"h{j // len(seeds)}", seeds[j % len(seeds)], cid, "ok", v)):
                c[k].append(x)
    return r, decide_columns(r, c, cands)


def test_too_few_cells_per_host_is_refused_with_the_reason():
    # the paper's design: 2 hosts x 2 seeds, a candidate that wins every cell by a hair
    r, d = decide({"a": [1.0, 1.0, 1.0, 1.0], "b": [1.0001, 1.0001, 1.0001, 1.0001]}, hosts=2,
                  checks=[{"kind": "ranks_first_in_all_cells", "candidate": "a"}])
    g = rb.gate_robustness(r, d)
    assert g.method == "not resampled" and g.rows == () and g.checks == ()
    assert g.note.startswith("refused: 2 cell(s) per host; a bootstrap within hosts needs at least 5")
    assert (g.last_promoted, g.first_eliminated) == ("a", "b")   # the margin and sensitivity still stand
    assert g.sensitivity


def test_two_cells_by_hand(monkeypatch):
    # one host, two seeds: a 1.0 and 1.3; b 1.2 and 1.2. Resamples {1,1} (1/4): a wins; {1,2} (1/2): a; {2,2}: b.
    monkeypatch.setattr(rb, "MIN_CELLS_PER_HOST", 2)
    r, d = decide({"a": [1.0, 1.3], "b": [1.2, 1.2]}, hosts=1,
                  checks=[{"kind": "near_equivalence", "candidate": "b", "reference": "a", "threshold": 0.1}])
    g = rb.gate_robustness(r, d)
    assert g.method == "exact bootstrap within hosts over 1 host(s) x 2 cells (3 distinct resamples)"
    rows = {x.config_id: x for x in g.rows}
    assert rows["a"].p_promoted == pytest.approx(0.75) and rows["b"].p_promoted == pytest.approx(0.25)
    assert (rows["a"].rank_lo, rows["a"].rank_hi) == (1, 2)
    (ch,) = g.checks
    assert ch.passed and ch.p_flip == pytest.approx(0.25)
    assert (ch.value_lo, ch.value_hi) == (pytest.approx(-0.1), pytest.approx(0.2))
    assert g.margin == pytest.approx(0.05)
    assert g.noise == pytest.approx(stats.sem([0.2, -0.1]))
    assert g.p_one_sided == pytest.approx(stats.ttest_rel([1.2, 1.2], [1.0, 1.3], alternative="greater").pvalue)


def reference_p_promoted(values: dict[str, list[float]], top_k: int, hosts: int) -> dict[str, float]:
    """The bootstrap within hosts by brute force: every multiset of each host's cells, the product of
    their multinomial weights, top_k by mean."""
    n = len(next(iter(values.values())))
    per = n // hosts
    groups = [list(range(h * per, (h + 1) * per)) for h in range(hosts)]

    def multisets(g):
        for combo in combinations_with_replacement(g, len(g)):
            yield combo, (math.factorial(len(g)) / math.prod(math.factorial(m) for m in Counter(combo).values())
                          / len(g) ** len(g))

    p = Counter()
    for parts in product(*(list(multisets(g)) for g in groups)):
        combo = [j for c, _ in parts for j in c]
        w = math.prod(x for _, x in parts)
        means = {c: sum(v[j] for j in combo) / n for c, v in values.items()}
        for c in sorted(means, key=lambda c: (means[c], c))[:top_k]:
            p[c] += w
    return p


def random_values(n_cands: int, n_cells: int, seed: int) -> dict[str, list[float]]:
    rng = np.random.default_rng(seed)
    q = np.linspace(0, 0.01, n_cands)
    return {f"c{i}": [round(1.0 + q[i] + x, 6) for x in rng.normal(0, 0.01, n_cells)] for i in range(n_cands)}


def test_exact_stratified_bootstrap_equals_brute_force_reference(monkeypatch):
    monkeypatch.setattr(rb, "MIN_CELLS_PER_HOST", 3)
    values = random_values(5, 6, 1)     # 2 hosts x 3 seeds: 10 x 10 resamples, each holding both hosts
    r, d = decide(values, hosts=2, top_k=2)
    g = rb.gate_robustness(r, d)
    assert g.resamples == 100
    ref = reference_p_promoted(values, 2, 2)
    for row in g.rows:
        assert row.p_promoted == pytest.approx(ref[row.config_id], abs=1e-12)
    assert math.fsum(x.p_promoted for x in g.rows) == pytest.approx(2.0)


def test_monte_carlo_bootstrap_is_seeded_and_close_to_exact():
    values = random_values(4, 8, 2)   # one host, 8 seeds: 6435 multisets > EXACT_LIMIT, drawn
    r, d = decide(values, hosts=1, top_k=2)
    g = rb.gate_robustness(r, d)
    assert g.method == f"bootstrap within hosts over 1 host(s) x 8 cells ({rb.RESAMPLES} draws, seed {rc.SEED})"
    assert rb.gate_robustness(r, d) == g   # deterministic
    ref = reference_p_promoted(values, 2, 1)
    for row in g.rows:
        assert abs(row.p_promoted - ref[row.config_id]) < 0.05


def test_single_score_standard_errors_are_not_drawn():
    """Every candidate is scored on the same tokens: a single score's SE is shared noise and moves no rank
    (drawing it independently per candidate made P(flip) 0.82 at the paper's final gate)."""
    values = {"a": [1.00, 1.001, 0.999, 1.0, 1.002], "b": [1.01, 1.012, 1.009, 1.011, 1.01]}
    r, d = decide(values, hosts=1)
    quiet = rb.gate_robustness(r, d)
    noisy = rb.gate_robustness(r, d, np.full((2, 5), 0.02))
    assert noisy == quiet
    assert {x.config_id: x.p_promoted for x in quiet.rows} == {"a": 1.0, "b": 0.0}


def test_documents_are_resampled_as_one_block_shared_by_every_candidate(monkeypatch):
    from auditkit.stats.uncertainty import DocLosses

    monkeypatch.setattr(rb, "RESAMPLES", 200)
    rng = np.random.default_rng(0)
    ndocs, cells = 60, 5
    b = rng.integers(100, 500, size=ndocs)
    hard = rng.normal(1.3, 0.3, size=ndocs)          # document difficulty, shared by both candidates
    gap = rng.normal(0.0, 0.05, size=ndocs)          # b's per-document gap to a: zero on average
    nats = {}
    values = {"a": [], "b": []}
    for k in range(cells):
        for cid, g in (("a", 0.0), ("b", 1.0)):
            n = (hard + g * (gap + 0.02)) * b * math.log(2)   # b is worse by 0.02 in every document
            nats[(cid, k)] = n
            values[cid].append(float(n.sum() / (math.log(2) * b.sum())))
    r, d = decide(values, hosts=1)
    g = rb.gate_robustness(r, d, docs=DocLosses(nats, b))
    assert "documents (one block shared by all candidates)" in g.method
    # shared difficulty cancels: b, worse in every document by 0.02 +- 0.05, stays behind in (nearly) every draw
    p = {x.config_id: x.p_promoted for x in g.rows}
    assert p["a"] >= 0.95
    assert rb.gate_robustness(r, d, docs=DocLosses(nats, b)) == g


def test_sensitivity_to_top_k_and_always_keep():
    values = {"a": [1.0, 1.0], "b": [1.1, 1.1], "c": [1.2, 1.2]}
    r, d = decide(values, top_k=2, keep=["c"])
    g = rb.gate_robustness(r, d)
    rows = {v: p for v, _, _, p in g.sensitivity}
    assert rows == {"top_k=1": ("c",), "frozen": ("a", "c"), "top_k=3": ("a", "b", "c"), "no always_keep": ("a", "b")}
    assert (g.last_promoted, g.first_eliminated) == ("a", "b")


def test_a_gate_too_large_to_resample_says_so(monkeypatch):
    monkeypatch.setattr(rb, "MAX_ENTRIES", 5)
    r, d = decide(random_values(3, 2, 3))
    g = rb.gate_robustness(r, d)
    assert g.method == "not resampled" and g.note == "3 candidates x 2 cells exceeds 5 values" and g.rows == ()


def test_correlation_interval_is_fisher_z_with_bonett_wright():
    a, b = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0], [2.0, 1.0, 4.0, 3.0, 7.0, 5.0, 6.0]
    ci = rc.correlation_interval(a, b, "k")
    rho = stats.spearmanr(a, b).statistic
    assert ci.spearman == pytest.approx(rho)
    # Bonett & Wright (2000): var(atanh r_s) = (1 + r_s^2 / 2) / (n - 3), written out here
    half = 1.959963984540054 * math.sqrt((1 + rho ** 2 / 2) / 4)
    assert (ci.ci_low, ci.ci_high) == (pytest.approx(math.tanh(math.atanh(rho) - half)),
                                       pytest.approx(math.tanh(math.atanh(rho) + half)))
    rhos = [stats.spearmanr(a, p).statistic for p in permutations(b)]
    assert ci.p_permutation == pytest.approx(sum(r >= ci.spearman - 1e-12 for r in rhos) / len(rhos))
    assert rc.correlation_interval(a, b, "k") == ci


def test_few_candidates_get_no_interval_but_keep_the_permutation_p():
    ci = rc.correlation_interval([1.0, 2.0, 3.0], [1.5, 2.5, 3.5], "k")
    assert ci.spearman == 1.0 and ci.ci_low is None and ci.ci_high is None
    assert ci.p_permutation == pytest.approx(1 / 6)   # perfect agreement of 3 happens by chance 1 time in 6
    assert ci.ci_method == "not computed: 3 candidates (Fisher z needs at least 4)"
    four = rc.correlation_interval([1.0, 2.0, 3.0, 4.0], [1.0, 2.0, 3.0, 4.0], "k")
    assert four.ci_low is None and "|rho| = 1" in four.ci_method and four.p_permutation == pytest.approx(1 / 24)
    assert rc.correlation_interval([1.0, 2.0], [1.0, 2.0], "k").ci_low is None


@pytest.fixture(scope="module")
def paper_pkg(tmp_path_factory) -> Path:
    return build_paper_package(tmp_path_factory.mktemp("paper") / "pkg")


def test_robustness_tables_are_registered_byte_stable_and_checked(paper_pkg, tmp_path):
    assert TableKind.ROBUSTNESS.value == "robustness"
    ids = {t.id for t in build_tables(paper_pkg) if t.kind == "robustness"}
    assert ids == {"robustness", "robustness_checks", "robustness_gates", "promotion_sensitivity",
                   "host_correlation_interval", "wallclock_confound", "host_sensitivity_baseline"}
    assert check_tables(paper_pkg).ok   # regenerated in this process == written when the package was built
    gates = (paper_pkg / "analysis/robustness_gates.csv").read_text()
    assert "stage3,4,3,3,not resampled,0,bridge,greedy," in gates and '"refused: 2 cell(s) per host;' in gates
    pkg = Path(shutil.copytree(paper_pkg, tmp_path / "pkg"))
    p = pkg / "analysis/robustness_checks.csv"
    p.write_text(p.read_text().replace("ranks_first_in_all_cells,bridge,,true,4.000000000,,,none,pass",
                                       "ranks_first_in_all_cells,bridge,,true,4.000000000,,,none,undetermined", 1))
    rep = check_tables(pkg)
    assert [f.code for f in rep.findings] == ["table-differs"]
    assert rep.findings[0].path == "analysis/robustness_checks.csv"


def test_checks_carry_their_interval_call_and_holm_p(paper_pkg):
    from auditkit.derived.tables import build_tables

    t = {t.id: t for t in build_tables(paper_pkg)}["robustness_checks"]
    col = {c: i for i, c in enumerate(t.columns)}
    assert t.rows
    for row in t.rows:
        assert row[col["call"]] in ("pass", "fail", "undetermined")
        assert row[col["call"]] != ("fail" if row[col["passed"]] else "pass")
        if row[col["p"]] is not None:
            assert row[col["p_holm"]] >= row[col["p"]]
        if row[col["ci_low"]] is not None:
            assert row[col["ci_low"]] <= row[col["value"]] <= row[col["ci_high"]]


def test_paper_gates_robustness(paper_pkg):
    out = decide_all(paper_pkg)
    s2 = rb.gate_robustness(out["stage2"].rules, out["stage2"].decision, out["stage2"].se)
    assert out["stage2"].se is None and s2.resamples == 0 and s2.note.startswith("refused")
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


def test_random_pairings_and_the_t_approximation_agree_with_scipy():
    rng = np.random.default_rng(5)
    a = rng.normal(size=10)
    b = a + rng.normal(scale=1.5, size=10)
    ci = rc.correlation_interval(list(a), list(b), "k")
    ref = stats.permutation_test((a,), lambda u: stats.spearmanr(u, b).statistic, permutation_type="pairings",
                                 n_resamples=20000, alternative="greater", rng=np.random.default_rng(1)).pvalue
    assert ci.permutation_method.startswith("9999 random pairings")
    assert abs(ci.p_permutation - ref) < 4 * math.sqrt(ref * (1 - ref) / 9999) + 1e-3
    a, b = rng.normal(size=250), rng.normal(size=250)
    big = rc.correlation_interval(list(a), list(b + 0.1 * a), "k")
    assert big.p_permutation == pytest.approx(stats.spearmanr(a, b + 0.1 * a, alternative="greater").pvalue, rel=1e-9)


def test_wallclock_flags_runs_below_80_percent_of_their_usual_steps():
    from auditkit.stats import throughput as tp

    steps = np.array([[100.0, 100.0, 70.0], [50.0, 52.0, 51.0]])   # host 0: median 100, the 70 is below 80
    assert tp.flags(steps).tolist() == [[False, False, True], [False, False, False]]
    d = np.array([[0.01, 0.02, 0.09], [0.01, 0.01, 0.01]])
    gap, n = tp.matched_gap(d, tp.flags(steps), np.zeros_like(d, dtype=bool))
    assert n == 5 and gap == pytest.approx(0.012)
    assert tp.steps_ratio(steps, steps * 2) == pytest.approx(0.5)


def test_wallclock_table_of_a_seconds_budget_gate(paper_pkg):
    t = {t.id: t for t in build_tables(paper_pkg)}["wallclock_confound"]
    col = {c: i for i, c in enumerate(t.columns)}
    checks = [r for r in t.rows if r[col["kind"]] == "check"]
    assert checks, t.rows
    for r in checks:   # no run flagged in the paper-shaped package: the matched gap is the wall-clock gap
        if not r[col["flagged"]]:
            assert r[col["matched_gap"]] == pytest.approx(r[col["wallclock_gap"]], abs=1e-9)


def test_host_sensitivity_against_the_cross_seed_baseline():
    # cells h0/1, h0/2, h1/1, h1/2; host 0 ranks a < b < c in both seeds, host 1 the reverse
    v = np.array([[1.0, 1.0, 3.0, 3.0], [2.0, 2.0, 2.0, 2.0], [3.0, 3.0, 1.0, 1.0]])
    b = rc.host_baseline(v, ["h0", "h1"], [1, 2])
    assert (b["cross_host"], b["cross_seed"], b["difference"]) == (-1.0, 1.0, 2.0)
    # of the 4 reassignments of each seed's cells to hosts, the observed one and its mirror reach 2
    assert b["p"] == 0.5
    # rankings that move with the seed as much as with the host: no host effect beyond the baseline
    w = np.array([[1.0, 3.0, 1.0, 3.0], [2.0, 2.0, 2.0, 2.0], [3.0, 1.0, 3.0, 1.0]])
    b2 = rc.host_baseline(w, ["h0", "h1"], [1, 2])
    assert b2["cross_host"] == 1.0 and b2["cross_seed"] == -1.0 and b2["difference"] == -2.0
    assert rc.host_baseline(v[:2], ["h0", "h1"], [1, 2]) is None


def test_spearman_of_cell_pairs_ranks_each_cell_once_and_matches_scipy():
    # host_baseline's correlations of every pair of cells: each cell is ranked once (not once per pair),
    # ties given average ranks, a constant cell undefined
    rng = np.random.default_rng(4)
    v = np.round(rng.normal(size=(30, 9)), 1)      # ties within cells
    v[:, 4] = 2.0
    pairs = [(i, j) for i in range(9) for j in range(i + 1, 9)]
    got = rc.spearman_pairs(v, pairs)
    for (i, j), rho in zip(pairs, got):
        if 4 in (i, j):
            assert math.isnan(rho)
        else:
            assert rho == pytest.approx(stats.spearmanr(v[:, i], v[:, j]).statistic, abs=1e-12)


def test_wallclock_flags_a_slow_run_in_the_table(paper_pkg, tmp_path):
    import csv
    import io

    t = {t.id: t for t in build_tables(paper_pkg)}["wallclock_confound"]
    col = {c: i for i, c in enumerate(t.columns)}
    check = next(r for r in t.rows if r[col["kind"]] == "check")
    gate, cand = check[col["gate"]], check[col["config_id"]]
    pkg = tmp_path / "pkg"
    shutil.copytree(paper_pkg, pkg)
    o = decide_all(pkg)[gate]
    rel = o.inputs[0]
    text = (pkg / rel).read_text()
    rows = list(csv.DictReader(io.StringIO(text)))
    slow = next(r for r in rows if r["config_id"] == cand and r["stage"] in o.rules["inputs"]["stages"])
    slow["num_steps"] = "1"                           # far below its usual steps on its host
    out = io.StringIO()
    w = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    (pkg / rel).write_text(out.getvalue())
    t2 = {t.id: t for t in build_tables(pkg)}["wallclock_confound"]
    runs = [r for r in t2.rows if r[col["kind"]] == "run"]
    assert [(r[col["gate"]], r[col["config_id"]], r[col["cell"]], r[col["steps"]]) for r in runs] == \
        [(gate, cand, f"{slow['host']}/{slow['seed']}", 1)]
    assert runs[0][col["median_steps"]] > 1 and runs[0][col["flagged"]] is True
    checks = [r for r in t2.rows if r[col["kind"]] == "check" and cand in (r[col["config_id"]], r[col["reference"]])
              and r[col["gate"]] == gate]
    assert checks and all(r[col["flagged"]] for r in checks)
    assert all(r[col["matched_cells"]] < len(o.decision.cells) for r in checks)
