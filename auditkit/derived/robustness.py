"""The `robustness` tables (SPEC section 7): per decided gate, the resampling of
`auditkit.derived.resampling`, every check's interval and call (`auditkit.stats.uncertainty`,
Holm-adjusted across the package), the wall-clock confound (`auditkit.stats.throughput`), host
sensitivity against its cross-seed baseline and host-pair correlations with intervals
(`auditkit.stats.correlation`)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from auditkit.derived.generators import host_tables
from auditkit.derived.resampling import gate_robustness
from auditkit.derived.table import Table
from auditkit.gates.engine import Better
from auditkit.stats.correlation import LEVEL, correlation_interval, host_baseline


def _wallclock_rows(p, o) -> list[tuple]:
    """The wall-clock confound of one decided gate whose stages all have budgets in seconds
    (`auditkit.stats.throughput`): a `run` row per flagged run (steps below 80% of its configuration's
    median on its host), and a `check` row per thresholded check with the wall-clock gap beside the
    gap on the cells where neither run is flagged and the median steps ratio. Nothing for other gates."""
    from auditkit.stats import throughput as tp

    rules, dec = o.rules, o.decision
    stages = set(rules["inputs"]["stages"])
    budgets = {s.stage: s for s in p.protocol.stages}
    if not stages or any(getattr(getattr(budgets.get(st), "budget", None), "kind", None) != "seconds"
                         for st in stages):
        return []
    hosts = sorted({h for h, _ in dec.cells})
    seeds = sorted({s for _, s in dec.cells})
    if len(dec.cells) != len(hosts) * len(seeds):
        return []
    elig = [c for c in dec.candidates if c.eligible]
    rows = p.rows
    ids = [c.config_id for c in elig]
    sel = rows[rows["stage"].isin(stages) & rows["config_id"].isin(ids)]
    # candidates x hosts x seeds, 0 where no row: a row of a host or seed the gate does not read is left out,
    # and of two rows of one run the later one counts
    ci = sel["config_id"].map({cid: i for i, cid in enumerate(ids)})
    hi = sel["host"].map({h: i for i, h in enumerate(hosts)})
    si = sel["seed"].map({sd: i for i, sd in enumerate(seeds)})
    at = pd.DataFrame({"c": ci, "h": hi, "s": si, "v": sel["steps"]}).dropna(subset=["h", "s"])
    at = at.drop_duplicates(subset=["c", "h", "s"], keep="last")
    steps3 = np.zeros((len(ids), len(hosts), len(seeds)), dtype=np.float64)
    steps3[at["c"].to_numpy(np.int64), at["h"].to_numpy(np.int64), at["s"].to_numpy(np.int64)] = \
        at["v"].to_numpy(np.float64)
    flags3 = tp.flags(steps3)
    med3 = np.median(steps3, axis=-1)
    steps = {cid: steps3[i] for i, cid in enumerate(ids)}
    flagged = {cid: flags3[i] for i, cid in enumerate(ids)}
    out = [(dec.gate, "run", ids[c], None, f"{hosts[i]}/{seeds[j]}", int(steps3[c, i, j]), float(med3[c, i]), True,
            None, None, None, None) for c, i, j in np.argwhere(flags3)]
    sign = 1.0 if Better(rules["metric"]["better"]) is Better.LOWER else -1.0
    by = {c.config_id: c for c in elig}
    grid = np.array([[dec.cells.index((h, s)) for s in seeds] for h in hosts])
    for ch in dec.checks:
        if ch.kind not in ("near_equivalence", "mean_gap") or ch.candidate not in by or ch.reference not in by:
            continue
        d = sign * (np.asarray(by[ch.candidate].values)[grid] - np.asarray(by[ch.reference].values)[grid])
        gap, n = tp.matched_gap(d, flagged[ch.candidate], flagged[ch.reference])
        out.append((dec.gate, "check", ch.candidate, ch.reference, None, None, None,
                    bool(flagged[ch.candidate].any() or flagged[ch.reference].any()), ch.value, gap, n,
                    tp.steps_ratio(steps[ch.candidate], steps[ch.reference])))
    return out


def robustness_tables(p) -> list:
    """The `robustness` tables of a package (`PackageData` `p`): `robustness` (per gate and
    candidate), `robustness_checks`, `robustness_gates` (method, margin, noise),
    `promotion_sensitivity` and `host_correlation_interval`. Only gates with a recorded
    decision, like the other tables; each decided again from the raw rows."""
    from auditkit.stats.uncertainty import apply_holm, gate_uncertainty

    kind = "robustness"
    outcomes = p.gates.outcomes if p.decisions else {}
    uncertain = []
    cand_rows, check_rows, gate_rows, sens_rows = [], [], [], []
    inputs = {"protocol.json", p.protocol.matrix}
    for g in p.protocol.gates:
        if g.gate not in p.decisions:
            continue
        o = outcomes[g.gate]
        inputs.add(o.rules_path)
        inputs.update(o.inputs)
        if not o.decided:
            gate_rows.append((g.gate, None, None, None, "not resampled", 0, None, None, None, None, None, None, None,
                              f"could not be decided: {o.error}"))
            continue
        docs, _why = p.gates.doc_losses(g.gate)
        r = gate_robustness(o.rules, o.decision, o.se, docs)
        u = gate_uncertainty(o.decision, o.rules, LEVEL, docs)
        uncertain.append(u)
        gate_rows.append((r.gate, r.cells, r.candidates, r.eligible, r.method, r.resamples, r.last_promoted,
                          r.first_eliminated, r.margin, r.noise, r.noise_source, r.margin_in_noise, r.p_one_sided,
                          r.note or None))
        for c in r.rows:
            cand_rows.append((r.gate, c.config_id, c.rank, c.promoted, c.p_promoted, c.p_rank1, c.rank_lo, c.rank_hi))
        boot = {c.index: c for c in r.checks}
        for e in u.checks:
            c = boot.get(e["index"])
            check_rows.append([r.gate, e["index"], e["kind"], e["candidate"], e["reference"], e["passed"],
                               e["estimate"], e["low"], e["high"], e["method"], e["call"], e["p"], None,
                               c.value_lo if c else None, c.value_hi if c else None, c.p_flip if c else None])
        for variant, k, keep, promoted in r.sensitivity:
            sens_rows.append((r.gate, variant, k, " ".join(keep), " ".join(promoted),
                              tuple(promoted) == tuple(o.decision.promoted)))
    wall_rows = []
    for g in p.protocol.gates:
        o = outcomes.get(g.gate)
        if g.gate in p.decisions and o is not None and o.decided:
            wall_rows += _wallclock_rows(p, o)
    base_rows = []
    for g in p.protocol.gates:
        o = outcomes.get(g.gate)
        if g.gate in p.decisions and o is not None and o.decided:
            dec = o.decision
            hs = sorted({h for h, _ in dec.cells}), sorted({sd for _, sd in dec.cells})
            elig = [c for c in dec.candidates if c.eligible]
            if len(dec.cells) == len(hs[0]) * len(hs[1]) and elig:
                order = [dec.cells.index((h, sd)) for h in hs[0] for sd in hs[1]]
                vals = np.array([c.values for c in elig], dtype=np.float64)[:, order]
                b = host_baseline(vals, hs[0], hs[1])
                if b is None:
                    base_rows.append((g.gate, len(elig), len(hs[0]), len(hs[1]), None, None, None, None,
                                      "not computed: needs 3 candidates, 2 hosts and 2 seeds"))
                else:
                    base_rows.append((g.gate, len(elig), len(hs[0]), len(hs[1]), b["cross_host"], b["cross_seed"],
                                      b["difference"], b["p"], b["method"]))
    apply_holm(uncertain)   # one family: every check of the package
    holm_p = {(u.gate, e["index"]): e["p_holm"] for u in uncertain for e in u.checks}
    for row in check_rows:
        row[12] = holm_p.get((row[0], row[1]))
    check_rows = [tuple(row) for row in check_rows]
    corr_rows = []
    host_tab = host_tables(p)[0]
    means: dict[tuple[str, str], dict[str, float]] = {}
    for stage, cid, host, _n, mean, _rank in host_tab.rows:
        if mean is not None:
            means.setdefault((stage, host), {})[cid] = mean
    for s in p.protocol.stages:
        hosts = sorted(h for (st, h) in means if st == s.stage)
        for i, a in enumerate(hosts):
            for b in hosts[i + 1:]:
                common = sorted(set(means[(s.stage, a)]) & set(means[(s.stage, b)]))
                ci = correlation_interval([means[(s.stage, a)][c] for c in common],
                                          [means[(s.stage, b)][c] for c in common], f"{s.stage}/{a}/{b}")
                corr_rows.append((s.stage, a, b, ci.n, ci.spearman, ci.ci_low, ci.ci_high, LEVEL, ci.ci_method,
                                  ci.p_permutation, ci.permutation_method))
    inputs = tuple(sorted(inputs))
    return [
        Table("robustness", kind, ("gate", "config_id", "rank", "promoted", "p_promoted", "p_rank1", "rank_lo",
                                   "rank_hi"), tuple(cand_rows), inputs),
        Table("robustness_checks", kind, ("gate", "check", "kind", "candidate", "reference", "passed", "value",
                                          "ci_low", "ci_high", "ci_method", "call", "p", "p_holm",
                                          "value_lo", "value_hi", "p_flip"), tuple(check_rows), inputs,
              {"value": 9, "ci_low": 9, "ci_high": 9, "p": 6, "p_holm": 6, "value_lo": 9, "value_hi": 9}),
        Table("robustness_gates", kind, ("gate", "cells", "candidates", "eligible", "method", "resamples",
                                         "last_promoted", "first_eliminated", "margin", "noise", "noise_source",
                                         "margin_in_noise", "p_one_sided", "note"), tuple(gate_rows), inputs,
              {"margin": 9, "noise": 9, "margin_in_noise": 3}),
        Table("promotion_sensitivity", kind, ("gate", "variant", "top_k", "always_keep", "promoted",
                                              "same_as_frozen"), tuple(sens_rows), inputs),
        Table("wallclock_confound", kind, ("gate", "kind", "config_id", "reference", "cell", "steps", "median_steps",
                                           "flagged", "wallclock_gap", "matched_gap", "matched_cells", "steps_ratio"),
              tuple(wall_rows), inputs, {"wallclock_gap": 9, "matched_gap": 9, "steps_ratio": 4}),
        Table("host_sensitivity_baseline", kind, ("gate", "candidates", "hosts", "seeds", "spearman_cross_host",
                                                  "spearman_cross_seed", "difference", "p_permutation", "method"),
              tuple(base_rows), inputs),
        Table("host_correlation_interval", kind, ("stage", "host_a", "host_b", "n", "spearman", "ci_low", "ci_high",
                                                  "ci_level", "ci_method", "p_permutation", "permutation_method"),
              tuple(corr_rows), tuple(p.run_csvs), {"ci_level": 2}),
    ]
