"""The table generators over the package's rows and recorded decisions (SPEC section 7), except
compute accounting (`auditkit.derived.accounting`) and robustness (`auditkit.derived.robustness`):
promotion survival, threshold sensitivity, host comparison (with Spearman and Kendall of host
rankings), stage and smoke summaries. Each takes a `TableSource` and returns its tables."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from auditkit.derived.package_data import TableSource
from auditkit.derived.table import Table, TableKind
from auditkit.gates.engine import CheckKind, threshold_passes

GRID = (0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 3.0)  # multiples of the frozen threshold


def promotion_table(p: TableSource) -> list[Table]:
    gates = [g.gate for g in p.protocol.gates if g.gate in p.decisions]
    furthest = {}
    seen = p.rows[["stage", "config_id"]].drop_duplicates()
    for stage, cid in zip(seen["stage"], seen["config_id"]):
        i = p.stage_order.get(stage, -1)
        if i > furthest.get(cid, (-1, ""))[0]:
            furthest[cid] = (i, stage)
    by_gate = {g: {c["config_id"]: c for c in p.decisions[g]["candidates"]} for g in gates}
    why = _reasons_by_gate(p, gates)
    rows = []
    for m in sorted(p.matrix, key=lambda r: r["config_id"]):
        cid = m["config_id"]
        ranks, outcome, reason = [], None, None
        for g in gates:
            c = by_gate[g].get(cid)
            ranks.append(None if c is None else c.get("rank"))
            if outcome is None and c is not None:
                if not c["eligible"]:
                    outcome, reason = f"ineligible at {g}", why[g].get(cid)
                elif cid not in p.decisions[g]["promoted"]:
                    outcome, reason = f"eliminated at {g}", why[g].get(cid)
        entered = [g for g in gates if cid in by_gate[g]]
        if outcome is None:
            outcome = f"promoted by {entered[-1]}" if entered else "not a candidate"
            reason = why[entered[-1]].get(cid) if entered else None
        rows.append((cid, m.get("role", ""), furthest.get(cid, (0, None))[1], *ranks, outcome, reason))
    return [Table("promotion_survival", TableKind.PROMOTION_SURVIVAL.value,
                  ("config_id", "role", "furthest_stage", *[f"rank_{g}" for g in gates], "outcome", "reason"),
                  tuple(rows), tuple([p.protocol.matrix] + p.run_csvs + p.decision_paths))]


def _reasons_by_gate(p: TableSource, gates: list[str]) -> dict[str, dict[str, str]]:
    """Per gate, why each candidate was promoted, eliminated or ineligible (`auditkit.gates.reasons`),
    from the recorded decision and the gate's rules; {} for a gate without readable rules."""
    from auditkit.gates.reasons import reasons_of_document

    out = {}
    for g in gates:
        rules = p.rules.get(g)
        ok = isinstance(rules, dict) and isinstance(rules.get("promote"), dict) and "top_k" in rules["promote"]
        out[g] = reasons_of_document(p.decisions[g], rules) if ok else {}
    return out


def flip_threshold(kind: str, value: float | None) -> float | None:
    """The smallest threshold at which the check passes (None: never, or at every threshold >= 0)."""
    if value is None:
        return None
    if kind == CheckKind.NEAR_EQUIVALENCE:
        return abs(value)
    return value if value >= 0 else None


def sensitivity_table(p: TableSource) -> list[Table]:
    rows = []
    for g in p.protocol.gates:
        d = p.decisions.get(g.gate)
        if d is None:
            continue
        for i, ch in enumerate(d["checks"]):
            if ch["kind"] not in (CheckKind.NEAR_EQUIVALENCE, CheckKind.MEAN_GAP) or ch.get("threshold") is None:
                continue
            frozen = float(ch["threshold"])
            flip = flip_threshold(ch["kind"], ch.get("value"))
            grid = sorted({round(frozen * k, 9) for k in GRID} | ({round(flip, 9)} if flip is not None else set()))
            for t in grid:
                rows.append((g.gate, i, ch["kind"], ch["candidate"], ch.get("reference"), ch.get("value"), t,
                             t == round(frozen, 9), threshold_passes(ch["kind"], ch.get("value"), t), flip))
    return [Table("threshold_sensitivity", TableKind.THRESHOLD_SENSITIVITY.value,
                  ("gate", "check", "kind", "candidate", "reference", "value", "threshold", "frozen", "passed",
                   "flip_at"), tuple(rows), tuple(p.decision_paths),
                  {"value": 9, "threshold": 9, "flip_at": 9})]


def _ranks(means: dict[str, float]) -> dict[str, int]:
    """Rank 1 = lowest mean, ties by config_id."""
    return {c: i + 1 for i, c in enumerate(sorted(means, key=lambda c: (means[c], c)))}


class _Groups:
    """The distinct rows of `keys` (sorted), each row's group (`codes`), and exact sums per group."""

    def __init__(self, keys: pd.DataFrame):
        self.codes = keys.groupby(list(keys.columns), sort=True).ngroup().to_numpy()
        self.order = np.argsort(self.codes, kind="stable")
        self.bounds = np.flatnonzero(np.diff(self.codes[self.order])) + 1
        starts = np.concatenate([[0], self.bounds])
        self.keys = list(keys.iloc[self.order[starts]].itertuples(index=False, name=None))

    def fsum(self, values: np.ndarray) -> list[tuple[int, float]]:
        """(count, math.fsum) of `values` per group, in the order of `keys`."""
        out = []
        for chunk in np.split(values[self.order], self.bounds):
            xs = chunk.tolist()
            out.append((len(xs), math.fsum(xs)))
        return out


def _group_fsum(keys: pd.DataFrame, values: np.ndarray) -> dict[tuple, tuple[int, float]]:
    """(count, exact sum) of `values` per distinct row of `keys` (math.fsum: order-independent)."""
    if len(keys) == 0:
        return {}
    g = _Groups(keys)
    return dict(zip(g.keys, g.fsum(values)))


def spearman(a: list[int], b: list[int]) -> float | None:
    """Spearman correlation of two rankings without ties (1..n); None for n < 2."""
    n = len(a)
    if n < 2:
        return None
    ra, rb = _rerank(a), _rerank(b)
    d2 = sum((x - y) ** 2 for x, y in zip(ra, rb))
    return 1.0 - 6.0 * d2 / (n * (n * n - 1))


def kendall(a: list[int], b: list[int]) -> float | None:
    """Kendall tau of two rankings without ties (O(n log n) inversion count); None for n < 2."""
    n = len(a)
    if n < 2:
        return None
    seq = [y for _, y in sorted(zip(_rerank(a), _rerank(b)))]
    inv = _inversions(seq)
    pairs = n * (n - 1) // 2
    return (pairs - 2 * inv) / pairs


def _rerank(xs: list) -> list[int]:
    order = sorted(range(len(xs)), key=lambda i: xs[i])
    r = [0] * len(xs)
    for pos, i in enumerate(order):
        r[i] = pos + 1
    return r


def _inversions(seq: list[int]) -> int:
    if len(seq) < 2:
        return 0
    mid = len(seq) // 2
    left, right = seq[:mid], seq[mid:]
    inv = _inversions(left) + _inversions(right)
    left.sort()
    right.sort()
    j = 0
    for x in left:  # count pairs (x in left, y in right) with x > y
        while j < len(right) and right[j] < x:
            j += 1
        inv += j
    return inv


def host_tables(p: TableSource) -> list[Table]:
    """`host_comparison` and `host_correlation`; made once per source that keeps a `memo` (the
    robustness tables read `host_comparison` too)."""
    memo = getattr(p, "memo", None)
    if memo is not None and "host_tables" in memo:
        return memo["host_tables"]
    out = _host_tables(p)
    if memo is not None:
        memo["host_tables"] = out
    return out


def _host_tables(p: TableSource) -> list[Table]:
    df = p.rows
    rank_rows, corr_rows = [], []
    for s in p.protocol.stages:
        sub = df[df["stage"] == s.stage]
        hosts = sorted(sub["host"].unique().tolist())
        if len(hosts) < 2:
            continue
        runs = sub.groupby(["host", "config_id"], sort=True)["good"].agg(["size", "all"])
        good = sub[sub["good"]]
        sums = _group_fsum(good[["host", "config_id"]], good["val"].to_numpy())
        means: dict[str, dict[str, float]] = {h: {} for h in hosts}
        for (h, cid), n, all_good in zip(runs.index, runs["size"].tolist(), runs["all"].tolist()):
            if all_good:
                cnt, total = sums[(h, cid)]
                means[h][cid] = total / cnt
        ranks = {h: _ranks(means[h]) for h in hosts}
        for (h, cid), n in zip(runs.index, runs["size"].tolist()):
            rank_rows.append((s.stage, cid, h, int(n), means[h].get(cid), ranks[h].get(cid)))
        gate = p.gate_of_stage(s.stage)
        k_rule = int(p.rules[gate]["promote"]["top_k"]) if gate else 3
        for i, a in enumerate(hosts):
            for b in hosts[i + 1:]:
                common = sorted(set(ranks[a]) & set(ranks[b]))
                ra = [ranks[a][c] for c in common]
                rb = [ranks[b][c] for c in common]
                k = min(k_rule, len(common))
                top_a = set(sorted(common, key=ranks[a].__getitem__)[:k])
                top_b = set(sorted(common, key=ranks[b].__getitem__)[:k])
                corr_rows.append((s.stage, a, b, len(common), spearman(ra, rb), kendall(ra, rb), k,
                                  len(top_a & top_b)))
    rank_rows.sort(key=lambda r: (p.stage_order[r[0]], r[1], r[2]))
    inputs = tuple(p.run_csvs + [p.protocol.gate(g).rules for g in p.rules])
    return [Table("host_comparison", TableKind.HOST_COMPARISON.value,
                  ("stage", "config_id", "host", "n", "mean_val_bpb", "rank"), tuple(rank_rows), inputs),
            Table("host_correlation", TableKind.HOST_COMPARISON.value,
                  ("stage", "host_a", "host_b", "n", "spearman", "kendall", "top_k", "top_k_overlap"),
                  tuple(corr_rows), inputs)]


def stage_summary_table(p: TableSource) -> list[Table]:
    df = p.rows
    runs = df.groupby(["stage", "config_id"], sort=True).size()
    good = df[df["good"]]
    g = good.groupby(["stage", "config_id"], sort=True)["val"]
    lo, hi = g.min().to_dict(), g.max().to_dict()
    sums, means, sq = {}, {}, {}
    if len(good):
        groups = _Groups(good[["stage", "config_id"]])
        val = good["val"].to_numpy()
        totals = groups.fsum(val)
        sums = dict(zip(groups.keys, totals))
        mean_of = np.array([total / n for n, total in totals])
        means = dict(zip(groups.keys, mean_of.tolist()))
        dev = val - mean_of[groups.codes]
        sq = dict(zip(groups.keys, groups.fsum(dev * dev)))
    rows = []
    for key, n_runs in zip(runs.index, runs.tolist()):
        n = sums.get(key, (0, 0.0))[0]
        mean = means.get(key)
        std = math.sqrt(sq[key][1] / (n - 1)) if n > 1 else None
        rows.append((key[0], key[1], int(n_runs), n, mean, std, lo.get(key), hi.get(key)))
    rows.sort(key=lambda r: (p.stage_order.get(r[0], len(p.stage_order)), r[0], r[1]))
    return [Table("stage_summary", TableKind.STAGE_SUMMARY.value,
                  ("stage", "config_id", "runs", "n_ok", "mean_val_bpb", "std_val_bpb", "min_val_bpb", "max_val_bpb"),
                  tuple(rows), tuple(p.run_csvs))]


def smoke_stages(p: TableSource) -> list[str]:
    """Stages named smoke (or stage0); else the first stage when no gate reads it."""
    names = [s.stage for s in p.protocol.stages if "smoke" in s.stage or s.stage == "stage0"]
    if not names and p.protocol.stages and p.gate_of_stage(p.protocol.stages[0].stage) is None \
            and len(p.protocol.stages) > 1:
        names = [p.protocol.stages[0].stage]
    return names


def smoke_table(p: TableSource) -> list[Table]:
    stages = smoke_stages(p)
    sub = p.rows[p.rows["stage"].isin(stages)]
    rows = [(st, h, c, int(sd), r, status, int(steps), None if math.isnan(v) else v, ts)
            for st, h, c, sd, r, status, steps, v, ts in zip(sub["stage"], sub["host"], sub["config_id"], sub["seed"],
                                                            sub["run_id"], sub["status"], sub["steps"], sub["val"],
                                                            sub["train_s"])]
    rows.sort(key=lambda r: (p.stage_order[r[0]], r[1], r[2], r[3], r[4]))
    inputs = tuple(x for x in p.run_csvs if any(x.endswith(f"_{s}_summary.csv") for s in stages))
    return [Table("smoke_summary", TableKind.SMOKE_SUMMARY.value,
                  ("stage", "host", "config_id", "seed", "run_id", "status", "num_steps", "val_bpb",
                   "training_seconds"), tuple(rows), inputs, {"training_seconds": 3})]
