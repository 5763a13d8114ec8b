"""auditkit.stats.uncertainty: each statistic against a reference implementation (scipy, statsmodels,
a textbook formula written here), and the intervals' and calls' calibration against a simulation
with a known truth (vectorised: thousands of simulated gates in about a second)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats

from auditkit.gates.engine import decide_columns
from auditkit.stats import uncertainty as U

LEVEL = 0.95
ALPHA = (1 - LEVEL) / 2


# --------------------------------------------------------------------------- references

def _textbook_tost(d: np.ndarray, low: float, high: float) -> float:
    """Schuirmann's TOST for the mean of paired differences, from the textbook: two one-sided t tests."""
    n = len(d)
    m, se = d.mean(), d.std(ddof=1) / math.sqrt(n)
    p_low = 1 - stats.t.cdf((m - low) / se, n - 1)     # H0: mean <= low
    p_high = stats.t.cdf((m - high) / se, n - 1)       # H0: mean >= high
    return max(p_low, p_high)


@pytest.mark.parametrize("seed", range(5))
def test_cells_model_is_scipys_paired_t(seed):
    rng = np.random.default_rng(seed)
    a = rng.normal(1.3, 0.01, size=6)
    b = a + rng.normal(0.004, 0.003, size=6)
    d = (b - a).reshape(2, 3)
    iv = U.cells_exchangeable(d, float(d.mean()))
    ref = stats.ttest_rel(b, a)
    lo, hi = iv.bounds(LEVEL)
    ci = ref.confidence_interval(LEVEL)
    assert lo == pytest.approx(ci.low, rel=1e-10) and hi == pytest.approx(ci.high, rel=1e-10)
    # one-sided p of "gap > 0.0" against scipy's alternative="greater"
    assert iv.p_above(0.0) == pytest.approx(stats.ttest_rel(b, a, alternative="greater").pvalue, rel=1e-10)
    # a mean-gap fail call's p is the one-sided test of gap > threshold
    _, p = U.threshold_call("mean_gap", iv, 0.001, passed=False, level=LEVEL)
    assert p == pytest.approx(stats.ttest_1samp(b - a, 0.001, alternative="greater").pvalue, rel=1e-10)


@pytest.mark.parametrize("seed", range(5))
def test_one_host_is_a_one_sample_t_over_seeds(seed):
    d = np.random.default_rng(seed).normal(0.002, 0.004, size=(1, 5))
    iv = U.hosts_fixed(d, float(d.mean()))
    ci = stats.ttest_1samp(d[0], 0.0).confidence_interval(LEVEL)
    assert iv.df == 4.0
    assert iv.bounds(LEVEL) == pytest.approx((ci.low, ci.high), rel=1e-10)


@pytest.mark.parametrize("seed", range(5))
def test_two_host_strata_use_welchs_degrees_of_freedom(seed):
    """With two strata of equal weight, the variance is (s1^2/n + s2^2/n) / 4 and its
    Welch-Satterthwaite df are those of Welch's two-sample t (the factor 1/4 cancels): scipy's."""
    rng = np.random.default_rng(seed)
    d = np.stack([rng.normal(0, 0.002, 4), rng.normal(0.01, 0.02, 4)])
    iv = U.hosts_fixed(d, float(d.mean()))
    welch = stats.ttest_ind(d[0], d[1], equal_var=False)
    assert iv.df == pytest.approx(welch.df, rel=1e-10)
    assert iv.se == pytest.approx(math.sqrt((d[0].var(ddof=1) + d[1].var(ddof=1)) / 4 / 4), rel=1e-12)
    # and three strata against the formula written out
    d3 = rng.normal(0, 1, size=(3, 5)) * np.array([[1.0], [2.0], [0.5]])
    v = d3.var(axis=1, ddof=1) / (9 * 5)
    iv3 = U.hosts_fixed(d3, float(d3.mean()))
    assert iv3.df == pytest.approx(v.sum() ** 2 / (v ** 2 / 4).sum(), rel=1e-12)
    assert iv3.se == pytest.approx(math.sqrt(v.sum()), rel=1e-12)


def test_hosts_random_is_a_t_over_host_means():
    d = np.array([[0.01, 0.012, 0.011], [0.002, 0.004, 0.001], [0.02, 0.018, 0.019]])
    iv = U.hosts_random(d, float(d.mean()))
    ci = stats.ttest_1samp(d.mean(axis=1), 0.0).confidence_interval(LEVEL)
    assert iv.df == 2.0 and iv.bounds(LEVEL) == pytest.approx((ci.low, ci.high), rel=1e-10)
    assert U.hosts_random(d[:1], 0.0) is None


@pytest.mark.parametrize("seed", range(6))
def test_tost_matches_statsmodels_and_the_textbook(seed):
    from statsmodels.stats.weightstats import ttost_paired

    rng = np.random.default_rng(seed)
    ref = rng.normal(1.3, 0.02, size=8)
    cand = ref + rng.normal(0.002 * seed, 0.004, size=8)
    d = (cand - ref).reshape(1, 8)   # one host: the cells model and the hosts-fixed model agree
    iv = U.hosts_fixed(d, float(d.mean()))
    passed = abs(d.mean()) <= 0.01
    call, p = U.threshold_call("near_equivalence", iv, 0.01, passed, LEVEL)
    if passed:
        sm_p = ttost_paired(cand, ref, -0.01, 0.01)[0]
        assert p == pytest.approx(sm_p, rel=1e-9)
        assert p == pytest.approx(_textbook_tost(d[0], -0.01, 0.01), rel=1e-9)
        assert call == ("pass" if sm_p <= ALPHA else "undetermined")
    else:
        assert call in ("fail", "undetermined")


def test_a_call_agrees_with_the_interval_against_the_threshold():
    rng = np.random.default_rng(7)
    for _ in range(200):
        d = rng.normal(rng.uniform(-0.03, 0.03), rng.uniform(0.0005, 0.01), size=(2, 3))
        est = float(d.mean())
        iv = U.hosts_fixed(d, est)
        lo, hi = iv.bounds(LEVEL)
        for kind, thr in (("near_equivalence", 0.01), ("mean_gap", 0.02)):
            passed = abs(est) <= thr if kind == "near_equivalence" else est <= thr
            call, _ = U.threshold_call(kind, iv, thr, passed, LEVEL)
            inside = (-thr < lo and hi < thr) if kind == "near_equivalence" else hi < thr
            outside = (lo > thr or hi < -thr) if kind == "near_equivalence" else lo > thr
            assert call == ("pass" if inside else "fail" if outside else "undetermined")
            assert call != ("fail" if passed else "pass")   # never the opposite of the rule's outcome


def test_holm_matches_statsmodels():
    from statsmodels.stats.multitest import multipletests

    ps = [0.01, 0.04, 0.03, 0.005, 0.5, None, 0.2]
    got = U.holm(ps)
    ref = multipletests([p for p in ps if p is not None], method="holm")[1]
    assert got[5] is None
    assert [g for g in got if g is not None] == pytest.approx(list(ref), rel=1e-12)


def test_ratio_estimator_variance_agrees_with_the_jackknife():
    rng = np.random.default_rng(3)
    b = rng.integers(200, 3000, size=400).astype(float)
    z = b * rng.normal(1.2, 0.3, size=400) + rng.normal(0, 50, size=400)
    v, df = U.ratio_docs_variance(z, b)
    n = len(z)
    loo = np.array([(z.sum() - z[i]) / (b.sum() - b[i]) for i in range(n)])
    jack = (n - 1) / n * ((loo - loo.mean()) ** 2).sum()
    assert df == n - 1
    assert v == pytest.approx(jack, rel=0.05)


def test_welch_satterthwaite_of_equal_parts_adds_the_df():
    assert U.welch_satterthwaite([(1.0, 3.0), (1.0, 3.0)]) == pytest.approx(6.0)
    assert U.welch_satterthwaite([(0.0, 3.0)]) is None


# --------------------------------------------------------------------------- calibration

def _simulate(rng, reps: int, hosts: int, seeds: int, gap: float, *, interaction: np.ndarray | None = None,
              sigma=(0.004, 0.008)):
    """Values of a candidate and a reference in reps x hosts x seeds cells: shared host and cell
    effects (cancel in the pair), a fixed host x candidate interaction (part of the hosts-fixed truth),
    independent seed noise with a host-specific sd. Returns (cand, ref, truth)."""
    host = rng.normal(0, 0.05, size=(reps, hosts, 1))
    cell = rng.normal(0, 0.02, size=(reps, hosts, seeds))
    sd = np.asarray(sigma[:hosts] if len(sigma) >= hosts else np.resize(sigma, hosts))[None, :, None]
    inter = np.zeros(hosts) if interaction is None else interaction
    ref = 1.3 + host + cell + rng.normal(0, 1, size=(reps, hosts, seeds)) * sd
    cand = 1.3 + gap + inter[None, :, None] + host + cell + rng.normal(0, 1, size=(reps, hosts, seeds)) * sd
    return cand, ref, gap + float(inter.mean())


def _intervals(d: np.ndarray, fn=U.hosts_fixed_se):
    est = d.mean(axis=(-2, -1))
    se, df = fn(d)
    q = stats.t.ppf(1 - ALPHA, df)
    return est, se, df, est - q * se, est + q * se


def test_hosts_fixed_interval_covers_the_truth_at_its_level():
    """2 hosts x 3 seeds, unequal seed noise per host, a host x candidate interaction: 4000 gates."""
    rng = np.random.default_rng(2026)
    reps = 4000
    cand, ref, truth = _simulate(rng, reps, 2, 3, 0.006, interaction=np.array([0.004, -0.002]))
    est, se, df, lo, hi = _intervals(cand - ref)
    cover = float(np.mean((lo <= truth) & (truth <= hi)))
    mc = math.sqrt(LEVEL * (1 - LEVEL) / reps)
    assert abs(cover - LEVEL) <= 4 * mc + 0.01, cover      # Welch-Satterthwaite is an approximation
    # the cells-exchangeable model counts the fixed host x candidate interaction as noise: conservative
    r = _intervals(cand - ref, U.cells_se)
    assert float(np.mean((r[3] <= truth) & (truth <= r[4]))) >= LEVEL - 4 * mc


def test_shipped_design_two_by_two_is_calibrated():
    rng = np.random.default_rng(11)
    reps = 4000
    cand, ref, truth = _simulate(rng, reps, 2, 2, -0.003)
    _, _, _, lo, hi = _intervals(cand - ref)
    cover = float(np.mean((lo <= truth) & (truth <= hi)))
    assert abs(cover - LEVEL) <= 4 * math.sqrt(LEVEL * (1 - LEVEL) / reps) + 0.01, cover


@pytest.mark.parametrize("kind,threshold,truths", [
    ("near_equivalence", 0.01, (0.0, 0.005, 0.0099, 0.01, -0.01, 0.0101, 0.015, 0.03, -0.03)),
    ("mean_gap", 0.02, (0.0, 0.015, 0.0199, 0.02, 0.0201, 0.025, 0.04)),
])
def test_wrong_calls_are_rare_at_every_truth(kind, threshold, truths):
    """A `pass` when the truth fails the rule, or a `fail` when it passes: at most alpha (+ MC error),
    whether the truth lies inside, on or outside the threshold."""
    rng = np.random.default_rng(5)
    reps = 3000
    for truth in truths:
        cand, ref, t = _simulate(rng, reps, 2, 4, truth)
        est, se, df, _, _ = _intervals(cand - ref)
        passed = np.abs(est) <= threshold if kind == "near_equivalence" else est <= threshold
        code, _ = U.call_arrays(kind, est, se, df, threshold, passed, LEVEL)
        truth_passes = abs(t) <= threshold if kind == "near_equivalence" else t <= threshold
        wrong = np.mean(code == (-1 if truth_passes else 1))
        assert wrong <= 0.05, (truth, wrong)
        assert wrong <= ALPHA + 4 * math.sqrt(ALPHA * (1 - ALPHA) / reps), (truth, wrong)


def test_clear_cases_are_decided_about_as_often_as_a_textbook_paired_t():
    """Far from the threshold, the stratified call decides about as often as scipy's paired t over all
    cells at the same one-sided alpha (it pays a few df for not assuming equal noise across hosts)."""
    rng = np.random.default_rng(8)
    reps = 3000
    for truth, expect in ((0.0, 1), (0.03, -1)):      # near-equivalence at 0.01: clear pass, clear fail
        cand, ref, _ = _simulate(rng, reps, 2, 5, truth, sigma=(0.005, 0.005))
        d = cand - ref
        est, se, df, _, _ = _intervals(d)
        passed = np.abs(est) <= 0.01
        code, _ = U.call_arrays("near_equivalence", est, se, df, 0.01, passed, LEVEL)
        ours = float(np.mean(code == expect))
        flat_c, flat_r = cand.reshape(reps, -1), ref.reshape(reps, -1)
        if expect == 1:   # textbook TOST with scipy's one-sided paired t
            p1 = stats.ttest_rel(flat_c - 0.01, flat_r, axis=1, alternative="less").pvalue
            p2 = stats.ttest_rel(flat_c + 0.01, flat_r, axis=1, alternative="greater").pvalue
            textbook = float(np.mean(np.maximum(p1, p2) <= ALPHA))
        else:
            textbook = float(np.mean(stats.ttest_rel(flat_c - 0.01, flat_r, axis=1,
                                                     alternative="greater").pvalue <= ALPHA))
        assert textbook > 0.5                      # the case is clear
        assert ours >= 0.85 * textbook, (truth, ours, textbook)


def test_batch_forms_equal_the_single_forms():
    rng = np.random.default_rng(4)
    d = rng.normal(0, 0.01, size=(7, 3, 4))
    se, df = U.hosts_fixed_se(d)
    for i in range(7):
        iv = U.hosts_fixed(d[i], float(d[i].mean()))
        assert (iv.se, iv.df) == pytest.approx((se[i], df[i]), rel=1e-12)


# --------------------------------------------------------------------------- evaluation noise

def _doc_world(rng, reps: int, ncell: int, ndocs: int, gap: float, tau: float):
    """Per-document losses: document difficulty shared by both runs, a per-document gap around `gap`
    (its spread `tau` is what the document sample adds), independent seed noise per cell.
    Returns (nats_cand, nats_ref, bytes) with shapes (reps, cells, docs) and (reps, docs)."""
    b = rng.integers(300, 3000, size=(reps, ndocs)).astype(float)
    base = rng.normal(1.3, 0.2, size=(reps, 1, ndocs))
    g = gap + tau * rng.normal(size=(reps, 1, ndocs))
    seed_c = rng.normal(0, 0.002, size=(reps, ncell, 1))
    seed_r = rng.normal(0, 0.002, size=(reps, ncell, 1))
    nats_r = (base + seed_r) * b[:, None, :] * math.log(2)
    nats_c = (base + g + seed_c) * b[:, None, :] * math.log(2)
    return nats_c, nats_r, b


def test_document_noise_interval_is_calibrated_and_cells_only_is_not():
    rng = np.random.default_rng(21)
    reps, ncell, ndocs, gap = 2000, 4, 120, 0.004
    nc, nr, b = _doc_world(rng, reps, ncell, ndocs, gap, tau=0.05)
    bpb = lambda n: n.sum(axis=-1) / (math.log(2) * b.sum(axis=-1)[:, None])   # noqa: E731
    d = (bpb(nc) - bpb(nr)).reshape(reps, 1, ncell)            # one host, four seeds
    est = d.mean(axis=(-2, -1))
    se, df = U.hosts_fixed_se(d)
    z = (nc - nr).mean(axis=1) / math.log(2)
    vd, dfd = U.ratio_docs_var(z, b)
    se2, df2 = U.add_variance(se, df, vd, dfd)
    # the truth: the expected gap over the document population (bytes-weighted, bytes independent of gap)
    q2 = stats.t.ppf(1 - ALPHA, df2)
    cover_docs = float(np.mean(np.abs(est - gap) <= q2 * se2))
    q1 = stats.t.ppf(1 - ALPHA, df)
    cover_cells = float(np.mean(np.abs(est - gap) <= q1 * se))
    assert abs(cover_docs - LEVEL) <= 4 * math.sqrt(LEVEL * (1 - LEVEL) / reps) + 0.01, cover_docs
    assert cover_cells < 0.8, cover_cells    # a fixed evaluation set's noise is invisible to the cells


def test_doc_losses_in_a_gate_widen_the_interval():
    rng = np.random.default_rng(1)
    cands = ["a", "b"]
    hosts, seeds = ["h1", "h2"], [1, 2]
    ndocs = 50
    b = rng.integers(100, 900, size=ndocs)
    nats, rows = {}, {"stage": [], "host": [], "seed": [], "config_id": [], "status": [], "value": []}
    cells = [(h, s) for h in hosts for s in seeds]
    for c, off in zip(cands, (0.0, 0.004)):
        for k, (h, s) in enumerate(cells):
            n = (1.3 + off + rng.normal(0, 0.08, ndocs) + rng.normal(0, 0.002)) * b * math.log(2)
            nats[(c, k)] = n
            for key, v in zip(rows, ("st", h, s, c, "ok", n.sum() / (math.log(2) * b.sum()))):
                rows[key].append(v)
    rules = {"gate": "g", "metric": {"column": "val_bpb", "better": "lower"},
             "inputs": {"stages": ["st"], "hosts": hosts, "seeds": seeds, "candidates": cands},
             "promote": {"top_k": 1}, "checks": [{"kind": "near_equivalence", "candidate": "b", "reference": "a",
                                                  "threshold": 0.01}]}
    dec = decide_columns(rules, rows, cands)
    plain = U.gate_uncertainty(dec, rules).to_json()["checks"][0]
    withd = U.gate_uncertainty(dec, rules, docs=U.DocLosses(nats, b)).to_json()["checks"][0]
    assert plain["estimate"] == withd["estimate"] == dec.checks[0].value
    assert withd["method"] == "paired-t-hosts-fixed+docs" and plain["method"] == "paired-t-hosts-fixed"
    assert withd["se"] > plain["se"]


# --------------------------------------------------------------------------- a gate, the output contract

def _gate(values: dict[str, list[float]], checks: list[dict], hosts=("h1", "h2"), seeds=(1, 2, 3),
          better="lower"):
    rows = {"stage": [], "host": [], "seed": [], "config_id": [], "status": [], "value": []}
    cells = [(h, s) for h in hosts for s in seeds]
    for c, vs in values.items():
        for (h, s), v in zip(cells, vs):
            for key, x in zip(rows, ("st", h, s, c, "ok", v)):
                rows[key].append(x)
    rules = {"gate": "g", "metric": {"column": "val_bpb", "better": better},
             "inputs": {"stages": ["st"], "hosts": list(hosts), "seeds": list(seeds), "candidates": list(values)},
             "promote": {"top_k": 1}, "checks": checks}
    return rules, decide_columns(rules, rows, list(values))


def test_gate_entries_follow_the_schema_and_estimate_is_the_checks_value():
    import jsonschema

    from auditkit.package.schemas import load_schema

    ref = [1.30, 1.31, 1.305, 1.32, 1.33, 1.325]
    checks = [{"kind": "near_equivalence", "candidate": "c", "reference": "r", "threshold": 0.01},
              {"kind": "mean_gap", "candidate": "x", "reference": "r", "threshold": 0.02},
              {"kind": "ranks_first_in_all_cells", "candidate": "r"}]
    for better in ("lower", "higher"):
        rules, dec = _gate({"r": ref, "c": [v + 0.002 for v in ref], "x": [v + 0.05 + 0.001 * i
                                                                          for i, v in enumerate(ref)]},
                           checks, better=better)
        u = U.gate_uncertainty(dec, rules)
        U.apply_holm([u])
        doc = json.loads(json.dumps(u.to_json()))
        jsonschema.validate(doc, load_schema("uncertainty"))
        for entry, ch in zip(doc["checks"], dec.checks):
            assert entry["estimate"] == ch.value and entry["passed"] is ch.passed
            if entry["low"] is not None:
                assert entry["low"] <= entry["estimate"] <= entry["high"]
        if better == "lower":
            eq, gap, first = doc["checks"]
            assert eq["call"] == "pass"          # a constant 0.002 gap: zero variance, inside 0.01
            assert gap["call"] == "fail" and gap["p"] < ALPHA
            assert first["call"] == "pass" and first["margin"]["versus"] == "c"


def test_one_seed_per_host_falls_back_to_exchangeable_cells_and_says_so():
    rules, dec = _gate({"r": [1.3, 1.31], "c": [1.302, 1.315]},
                       [{"kind": "near_equivalence", "candidate": "c", "reference": "r", "threshold": 0.01}],
                       seeds=(1,))
    u = U.gate_uncertainty(dec, rules)
    assert u.checks[0]["method"] == "paired-t-cells" and u.checks[0]["df"] == 1.0
    assert any("one seed each" in n for n in u.notes)
    assert any("no per-document evaluation losses" in n for n in u.notes)


def test_one_cell_gives_no_interval_and_no_call():
    rules, dec = _gate({"r": [1.3], "c": [1.302]},
                       [{"kind": "mean_gap", "candidate": "c", "reference": "r", "threshold": 0.01}],
                       hosts=("h1",), seeds=(1,))
    entry = U.gate_uncertainty(dec, rules).checks[0]
    assert entry["low"] is None and entry["call"] == "undetermined" and entry["reason"]


def test_level_must_be_a_probability():
    rules, dec = _gate({"r": [1.3] * 6, "c": [1.31] * 6}, [])
    with pytest.raises(ValueError):
        U.gate_uncertainty(dec, rules, level=1.0)


# --------------------------------------------------------------------------- the command

def _replay_json(*args):
    from click.testing import CliRunner

    from auditkit.cli import cli

    res = CliRunner().invoke(cli, ["replay-gate", *args, "--json"])
    return res.exit_code, json.loads(res.output)


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    from fixtures.synth import make_package

    return make_package(tmp_path_factory.mktemp("synth") / "pkg", tables=False)


def test_replay_gate_json_carries_the_uncertainty_of_every_gate(synth):
    import jsonschema

    from auditkit.package.schemas import load_schema

    code, doc = _replay_json("all", "--package", str(synth))
    assert code == 0
    schema = load_schema("uncertainty")
    n_checks = 0
    for g in doc["gates"]:
        u = g["uncertainty"]
        jsonschema.validate(u, schema)
        assert u["level"] == 0.95
        assert [(c["kind"], c["candidate"], c["estimate"], c["passed"]) for c in u["checks"]] == \
            [(c["kind"], c["candidate"], c["value"], c["passed"]) for c in g["replayed"]["checks"]]
        n_checks += len(u["checks"])
        assert any("no per-document evaluation losses" in n for n in u["notes"])
    assert n_checks > 0
    # Holm over every check reported together: adjusted p never below the raw one
    for g in doc["gates"]:
        for c in g["uncertainty"]["checks"]:
            if c["p"] is not None:
                assert c["p_holm"] >= c["p"]


def test_level_option_narrows_the_intervals(synth):
    _, wide = _replay_json("all", "--package", str(synth), "--level", "0.99")
    _, narrow = _replay_json("all", "--package", str(synth), "--level", "0.8")
    pairs = [(w, n) for gw, gn in zip(wide["gates"], narrow["gates"])
             for w, n in zip(gw["uncertainty"]["checks"], gn["uncertainty"]["checks"]) if w["low"] is not None]
    assert pairs
    for w, n in pairs:
        assert w["estimate"] == n["estimate"]
        assert w["high"] - w["low"] >= n["high"] - n["low"]
        assert narrow["gates"][0]["uncertainty"]["level"] == 0.8


def test_text_output_has_one_call_line_per_check(synth):
    from click.testing import CliRunner

    from auditkit.cli import cli

    res = CliRunner().invoke(cli, ["replay-gate", "all", "--package", str(synth), "-v"])
    _, doc = _replay_json("all", "--package", str(synth))
    calls = [line for line in res.output.splitlines() if line.startswith("call ")]
    assert len(calls) == sum(len(g["uncertainty"]["checks"]) for g in doc["gates"])
    assert all(line.rsplit("-> ", 1)[1].split(",")[0] in ("pass", "fail", "undetermined") for line in calls)


def test_shipped_package_states_what_its_data_support():
    from pathlib import Path

    pkg = Path(__file__).resolve().parents[1] / "ancillary"
    code, doc = _replay_json("all", "--package", str(pkg))
    assert code == 0
    for g in doc["gates"]:
        for c in g["uncertainty"]["checks"]:
            assert c["call"] in ("pass", "fail", "undetermined")
            assert c["call"] != ("fail" if c["passed"] else "pass")


# --------------------------------------------------------------------------- the forest plot

def test_forest_plot_is_svg_with_one_row_per_thresholded_check():
    import base64
    import xml.dom.minidom

    from auditkit.report.forest import forest_data_uri, forest_svg

    ref = [1.30, 1.31, 1.305, 1.32, 1.33, 1.325]
    checks = [{"kind": "near_equivalence", "candidate": "c<&>", "reference": "r", "threshold": 0.01},
              {"kind": "mean_gap", "candidate": "x", "reference": "r", "threshold": 0.02},
              {"kind": "ranks_first_in_all_cells", "candidate": "r"}]
    rules, dec = _gate({"r": ref, "c<&>": [v + 0.002 + 0.001 * (i % 2) for i, v in enumerate(ref)],
                        "x": [v + 0.05 for v in ref]}, checks)
    u = U.gate_uncertainty(dec, rules).to_json()
    svg = forest_svg(u)
    doc = xml.dom.minidom.parseString(svg)            # well-formed: a hostile name is escaped
    texts = [t.firstChild.data for t in doc.getElementsByTagName("text")]
    assert "near equivalence: c<&> vs r" in texts and "mean gap: x vs r" in texts
    assert len(doc.getElementsByTagName("circle")) == 2    # ranks-first has no gap to plot
    uri = forest_data_uri(u)
    assert base64.b64decode(uri.split(",", 1)[1]).decode() == svg
    assert forest_svg({"level": 0.95, "checks": [], "candidates": [], "notes": []}) is None
