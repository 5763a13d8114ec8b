"""auditkit's resampling and win counts against rliable (Agarwal et al. 2021), the reference
implementation of the stratified bootstrap and the probability of improvement.

The correspondence (docs/STATISTICS.md, "rliable as a reference"): auditkit's host-seed cells are
rliable's runs x tasks with hosts as the tasks (the strata) and seeds as the runs; auditkit resamples
the seeds within each host and every candidate shares the resampled cells, which is rliable's
`StratifiedBootstrap` over a (runs, tasks, candidates) array. rliable's probability of improvement
compares runs *unpaired* within a task; auditkit pairs the candidates within a cell (same host and
seed slot), so its per-cell win fraction is rliable's probability of improvement with every cell a
task of one run, and the two differ by construction once seeds are pooled (tested below).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from auditkit.derived import resampling
from auditkit.gates.engine import decide_columns

def _import_rliable():
    """rliable's library and metrics. rliable pins arch < 8 (arch 8 dropped `random_state`, which
    rliable passes), and arch 7 decorates one plotting method with pandas' private `deprecate_kwarg`
    in its pre-3.0 form; under pandas 3 that call fails at import, so it is made a no-op while arch
    imports (it only adds a deprecation warning to `ARCHModelFixedResult.plot`)."""
    import pandas.util._decorators as decorators

    original = decorators.deprecate_kwarg

    def tolerant(*args, **kwargs):
        try:
            return original(*args, **kwargs)
        except TypeError:
            return lambda f: f

    decorators.deprecate_kwarg = tolerant
    try:
        from rliable import library, metrics
    finally:
        decorators.deprecate_kwarg = original
    return library, metrics


try:
    rliable_library, rliable_metrics = _import_rliable()
except ImportError as exc:
    pytest.skip(f"rliable is not installed ({exc}): pip install -e '.[test]'", allow_module_level=True)


def decided(values: np.ndarray, names: list[str], top_k: int = 1, checks=()):
    """The engine's decision of `values` (candidates x hosts x seeds, val_bpb: lower is better)."""
    nc, nh, ns = values.shape
    rules = {"gate": "g", "inputs": {"stages": ["s"], "hosts": [f"h{j}" for j in range(nh)],
                                     "seeds": list(range(1, ns + 1)), "candidates": list(names)},
             "metric": {"column": "val_bpb", "better": "lower"},
             "promote": {"top_k": top_k, "always_keep": []}, "checks": list(checks)}
    cols = {"stage": [], "host": [], "seed": [], "config_id": [], "status": [], "value": []}
    for i, cid in enumerate(names):
        for h in range(nh):
            for s in range(ns):
                for k, x in zip(cols, ("s", f"h{h}", s + 1, cid, "ok", float(values[i, h, s]))):
                    cols[k].append(x)
    return rules, decide_columns(rules, cols, list(names))


def rliable_first(values: np.ndarray, reps: int, seed: int) -> np.ndarray:
    """P(each candidate has the lowest mean) under rliable's StratifiedBootstrap of the cells: tasks =
    hosts, runs = seeds. rliable draws an index for every element of the array it is given, so it is
    given the cells' seed indices (runs x tasks) and every candidate is read at the drawn cells."""
    nc, nh, ns = values.shape
    cells = np.tile(np.arange(ns)[:, None], (1, nh))          # (runs = seeds, tasks = hosts)
    bs = rliable_library.StratifiedBootstrap(cells)
    np.random.seed(seed)                                      # rliable draws from numpy's global generator
    hosts = np.arange(nh)[None, :]
    firsts = bs.apply(lambda idx: np.eye(nc)[np.argmin(values[:, hosts, idx].mean(axis=(1, 2)))], reps)
    return firsts.mean(axis=0)


def close(p_auditkit: float, p_ref: float, n_auditkit: int | None, n_ref: int) -> bool:
    """Equal within 4.5 standard errors of the Monte Carlo error of both (n None: exact)."""
    p = min(max((p_auditkit + p_ref) / 2, 1e-3), 1 - 1e-3)
    var = p * (1 - p) * ((1 / n_auditkit if n_auditkit else 0.0) + 1 / n_ref)
    return abs(p_auditkit - p_ref) <= 4.5 * math.sqrt(var) + 1e-12


def _gate_values(rng, hosts: int, seeds: int) -> np.ndarray:
    """Three candidates close enough that the bootstrap is unsure which is first; host effects
    shared by every candidate, seed noise independent."""
    means = np.array([1.000, 1.002, 1.004])[:, None, None]
    host = rng.normal(0, 0.02, size=(1, hosts, 1))
    return means + host + rng.normal(0, 0.004, size=(3, hosts, seeds))


@pytest.mark.parametrize("hosts,seeds", [(1, 6), (2, 5), (3, 5)])
def test_p_rank1_is_rliables_stratified_bootstrap(hosts, seeds):
    rng = np.random.default_rng(20 + hosts)
    v = _gate_values(rng, hosts, seeds)
    names = ["a", "b", "c"]
    rules, d = decided(v, names)
    g = resampling.gate_robustness(rules, d)
    exact = g.method.startswith("exact")
    assert exact == (hosts == 1), g.method          # one host of 6 seeds: 462 resamples, enumerated
    assert f"{hosts} host(s) x {seeds} cells" in g.method
    ours = {r.config_id: r.p_rank1 for r in g.rows}
    assert 0.02 < max(ours.values()) < 0.98, ours    # a case where resampling has something to say
    reps = 4000
    ref = rliable_first(v, reps, seed=7)
    for i, cid in enumerate(names):
        assert close(ours[cid], float(ref[i]), None if exact else g.resamples, reps), (cid, ours, ref)


def test_the_interval_of_a_gap_is_a_quantile_of_rliables_bootstrap():
    rng = np.random.default_rng(5)
    v = _gate_values(rng, 1, 6)
    rules, d = decided(v, ["a", "b", "c"], checks=[{"kind": "mean_gap", "candidate": "b", "reference": "a",
                                                    "threshold": 0.01}])
    g = resampling.gate_robustness(rules, d)
    (ch,) = g.checks
    diff = v[1] - v[0]                                # (hosts, seeds): the check's paired gap per cell
    bs = rliable_library.StratifiedBootstrap(diff.T)  # (runs = seeds, tasks = hosts)
    np.random.seed(3)
    reps = 20000
    gaps = bs.apply(lambda a: np.array([a.mean()]), reps)[:, 0]
    tol = 4.5 * math.sqrt(0.025 * 0.975 / reps) + 1e-12
    eps = 1e-12
    for q, x in ((0.025, ch.value_lo), (0.975, ch.value_hi)):
        # x is the q-quantile of the exact bootstrap: P(gap < x) <= q <= P(gap <= x)
        assert np.mean(gaps < x - eps) <= q + tol, (q, x)
        assert np.mean(gaps <= x + eps) >= q - tol, (q, x)


def test_win_fraction_is_probability_of_improvement_with_cells_as_tasks():
    rng = np.random.default_rng(11)
    v = 1.0 + rng.normal(0, 0.01, size=(2, 3, 4))    # two candidates, 3 hosts x 4 seeds
    rules, d = decided(v, ["a", "b"])
    a = d.candidate("a")
    cells = v.shape[1] * v.shape[2]
    # rliable scores are higher-is-better: -val_bpb; every cell a task with one run
    x, y = -v[0].reshape(1, cells), -v[1].reshape(1, cells)
    assert rliable_metrics.probability_of_improvement(x, y) == pytest.approx(a.wins / cells)
    assert 0 < a.wins < cells                         # not a degenerate case


def test_pooled_probability_of_improvement_differs_from_the_paired_comparison_by_construction():
    # each seed slot moves every candidate alike (the same data order and initialisation): b is worse
    # than a by 0.001 in every cell, and the seed-to-seed spread is ten times that
    rng = np.random.default_rng(2)
    seed_effect = rng.normal(0, 0.01, size=(1, 2, 6))
    v = np.concatenate([1.0 + seed_effect, 1.001 + seed_effect])
    rules, d = decided(v, ["a", "b"], checks=[{"kind": "ranks_first_in_all_cells", "candidate": "a"}])
    assert d.candidate("a").wins == 12 and d.checks[0].passed          # paired: a wins every cell
    g = resampling.gate_robustness(rules, d)
    assert {r.config_id: r.p_rank1 for r in g.rows}["a"] == 1.0        # and every resample of cells
    # rliable's probability of improvement, hosts as tasks and seeds as runs, compares every run of a
    # with every run of b within a host: the seed spread swamps the gap
    x, y = -v[0].T, -v[1].T                                             # (runs = seeds, tasks = hosts)
    poi = rliable_metrics.probability_of_improvement(x, y)
    assert 0.5 < poi < 0.75
    # and it is what pooling the seeds gives: the mean over hosts of P(a run of a beats a run of b)
    by_hand = np.mean([np.mean(x[:, h][:, None] > y[:, h][None, :]) for h in range(2)])
    assert poi == pytest.approx(by_hand)


def test_rliables_bootstrap_of_separate_algorithms_is_unpaired_by_construction():
    # rliable resamples each algorithm's runs on their own (an index per array element); auditkit's
    # candidates share every drawn cell, because a cell (host, seed slot) moves them all alike. With
    # one host of 6 seeds, the third candidate is never first in any resample of shared cells, but is
    # in some where each candidate's seeds are drawn apart
    rng = np.random.default_rng(21)
    v = _gate_values(rng, 1, 6)
    rules, d = decided(v, ["a", "b", "c"])
    ours = {r.config_id: r.p_rank1 for r in resampling.gate_robustness(rules, d).rows}
    assert ours["c"] == 0.0
    shared = rliable_first(v, 4000, seed=7)
    assert shared[2] == 0.0
    separate = rliable_library.StratifiedBootstrap(np.transpose(v, (2, 1, 0)))   # (runs, tasks, candidates)
    np.random.seed(7)
    firsts = separate.apply(lambda a: np.eye(3)[np.argmin(a.mean(axis=(0, 1)))], 4000).mean(axis=0)
    assert firsts[2] > 0.0
