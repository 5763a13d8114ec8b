"""How robust is each gate's decision? Resampling through the engine, seeded and byte-stable.

Per gate (`gate_robustness`, pure): the gate's host-seed cells are resampled with
replacement, each resample is decided by `rules.decide_columns` with the frozen
rules, and what changes is counted:

- each eligible candidate's probability of being promoted and of ranking first,
  and a 95% interval of its overall rank;
- each check's probability of flipping its outcome, and a 95% interval of its value;
- the margin between the last candidate promoted on its rank and the first one
  eliminated, in val_bpb and in units of the observed noise (the standard error of
  their paired per-cell difference), with a one-sided paired t-test
  (`scipy.stats.ttest_rel`);
- the promoted list under every `top_k` within 3 of the frozen one and without
  `always_keep` (thresholds never change a promoted list: SPEC 5.8; the
  `threshold_sensitivity` table covers the checks).

Resampling is stratified by host: each host's cells are resampled among themselves. It is
refused, with the reason, when a host has fewer than `MIN_CELLS_PER_HOST` cells (the paper's
gates have 1 or 2). It is exact — every combination of per-host multisets, weighted by
their multinomial probabilities — while there are at most `EXACT_LIMIT`; beyond that,
`RESAMPLES` draws within hosts from `numpy.random.default_rng` seeded by `SEED` and the
gate's name (fewer, never below `MIN_RESAMPLES`, for gates so large that 1000 draws would
decide more than `VALUE_BUDGET` values; gates beyond `MAX_ENTRIES` values are not resampled
and say so). Where every run has per-document losses (SPEC v1.2), each draw also resamples
the evaluation documents as one block shared by every candidate and cell. A row's
single-score `<metric>_se` is never drawn: every candidate is scored on the same tokens, so
that noise is shared and changes no rank or gap.

Host correlations (`host_correlation_intervals`): per stage and host pair, the
Spearman correlation of the hosts' candidate rankings with a 95% interval from Fisher's z
with the Bonett-Wright variance (none below 4 candidates or at |rho| = 1: a percentile
bootstrap over 3 or 4 candidates gives [1, 1] or [-1, 1] and says nothing), and the
permutation p-value of an agreement at least as strong
(`scipy.stats.permutation_test`: every pairing for n <= 7, 9999 seeded ones up to
`PERMUTATION_LIMIT` candidates, scipy's t approximation beyond).
"""

from __future__ import annotations

import math
import zlib
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from itertools import combinations_with_replacement, permutations, product

import numpy as np

from auditkit.gates.engine import Better, Decision, decide_columns

SEED = 20260502
RESAMPLES = 1000
EXACT_LIMIT = 2000           # distinct cell multisets enumerated exactly
LEVEL = 0.95
MAX_ENTRIES = 20_000         # candidates x cells above which a gate is not resampled (stated in its row)
VALUE_BUDGET = 2_000_000     # values decided per gate (or ranked per host pair): fewer draws for large ones
MIN_RESAMPLES = 200
SENSITIVITY_SPAN = 3         # top_k variants: the frozen top_k +- this many
PERMUTATION_LIMIT = 200      # candidates above which the permutation p-value is scipy's t approximation


@dataclass(frozen=True)
class CandidateRobustness:
    config_id: str
    promoted: bool
    rank: int
    p_promoted: float
    p_rank1: float
    rank_lo: int
    rank_hi: int


@dataclass(frozen=True)
class CheckRobustness:
    index: int
    kind: str
    candidate: str
    reference: str | None
    passed: bool
    value: float | None
    value_lo: float | None
    value_hi: float | None
    p_flip: float


@dataclass(frozen=True)
class GateRobustness:
    gate: str
    cells: int
    candidates: int
    eligible: int
    method: str
    resamples: int
    note: str = ""
    rows: tuple[CandidateRobustness, ...] = ()
    checks: tuple[CheckRobustness, ...] = ()
    last_promoted: str | None = None
    first_eliminated: str | None = None
    margin: float | None = None
    noise: float | None = None
    noise_source: str | None = None
    margin_in_noise: float | None = None
    p_one_sided: float | None = None
    sensitivity: tuple[tuple[str, int, tuple[str, ...], tuple[str, ...]], ...] = field(default=())
    # (variant, top_k, always_keep, promoted)


def _resample_rules(rules: dict, n: int, candidates: list[str], top_k: int | None = None,
                    keep: list[str] | None = None) -> dict:
    """The frozen rules re-pointed at n pseudo-cells ``r000/0 .. r<n-1>/0``."""
    promote = dict(rules["promote"])
    if top_k is not None:
        promote["top_k"] = top_k
    if keep is not None:
        promote["always_keep"] = keep
    return {**rules, "inputs": {"stages": ["resample"], "hosts": [f"r{j:03d}" for j in range(n)], "seeds": [0],
                                "candidates": candidates}, "promote": promote}


def _columns(values: np.ndarray, candidates: list[str]) -> dict:
    """Engine columns for a candidates x cells matrix of metric values."""
    nc, n = values.shape
    return {**_labels(tuple(candidates), n), "value": values.reshape(-1)}


@lru_cache(maxsize=64)
def _labels(candidates: tuple[str, ...], n: int) -> dict:
    """The label columns of `_columns` (shared by every resample of a gate; never mutated)."""
    nc = len(candidates)
    return {"stage": np.full(nc * n, "resample", dtype=object),
            "host": np.array([f"r{j:03d}" for _ in range(nc) for j in range(n)], dtype=object),
            "seed": np.zeros(nc * n, dtype=np.int64),
            "config_id": np.array([c for c in candidates for _ in range(n)], dtype=object),
            "status": np.full(nc * n, "ok", dtype=object)}


def _quantile(pairs: list[tuple[float, float]], q: float) -> float:
    """Smallest x whose cumulative weight reaches q (pairs: (x, weight), weights summing to 1)."""
    acc = 0.0
    for x, w in sorted(pairs):
        acc += w
        if acc >= q - 1e-12:
            return x
    return sorted(pairs)[-1][0]


def draw_count(values_per_draw: int) -> int:
    """Draws for a resampling whose every draw handles `values_per_draw` values: `RESAMPLES`, fewer
    (not below `MIN_RESAMPLES`) where that would exceed `VALUE_BUDGET`; the method names the count."""
    return min(RESAMPLES, max(MIN_RESAMPLES, VALUE_BUDGET // max(1, values_per_draw)))


MIN_CELLS_PER_HOST = 5     # below this, a bootstrap within hosts is not run (see `gate_robustness`)


def _host_groups(cells) -> list[list[int]]:
    """The decision's cell indexes grouped by host (hosts in sorted order)."""
    groups: dict[str, list[int]] = {}
    for j, (h, _s) in enumerate(cells):
        groups.setdefault(h, []).append(j)
    return [groups[h] for h in sorted(groups)]


def _multisets(group: list[int]) -> list[tuple[tuple[int, ...], float]]:
    """Every multiset of len(group) cells drawn from `group`, with its multinomial probability."""
    n = len(group)
    out = []
    for combo in combinations_with_replacement(group, n):
        counts = Counter(combo).values()
        out.append((combo, math.factorial(n) / math.prod(math.factorial(m) for m in counts) / n ** n))
    return out


def _draws(groups: list[list[int]], gate: str, entries: int, docs: bool
           ) -> tuple[str, list[tuple[tuple[int, ...], float]], int]:
    """(method, [(cell indexes, weight)], number of resamples) of a bootstrap stratified by host: each
    host's cells are resampled among themselves. Exact (every combination of per-host multisets,
    weighted) while there are at most `EXACT_LIMIT`; else seeded draws within each host."""
    sizes = [len(g) for g in groups]
    n = sum(sizes)
    distinct = math.prod(math.comb(2 * k - 1, k) for k in sizes)
    hosts = f"{len(groups)} host(s) x {'/'.join(map(str, sorted(set(sizes))))} cells"
    if not docs and distinct <= EXACT_LIMIT:
        out = [(tuple(j for part in parts for j in part[0]), math.prod(part[1] for part in parts))
               for parts in product(*(_multisets(g) for g in groups))]
        return f"exact bootstrap within hosts over {hosts} ({len(out)} distinct resamples)", out, len(out)
    count = draw_count(entries)
    rng = np.random.default_rng([SEED, zlib.crc32(gate.encode())])
    cols = [np.asarray(g)[rng.integers(0, len(g), size=(count, len(g)))] for g in groups]
    idx = np.concatenate(cols, axis=1) if cols else np.zeros((count, 0), dtype=np.int64)
    what = f"bootstrap within hosts over {hosts}" + (" and documents (one block shared by all candidates)"
                                                       if docs else "")
    return f"{what} ({count} draws, seed {SEED})", [(tuple(int(i) for i in row), 1.0 / count) for row in idx], count


def gate_robustness(rules: dict, decision: Decision, se: np.ndarray | None = None, docs=None) -> GateRobustness:
    """Resample `decision`'s cells within hosts (and, where `docs` — per-document losses,
    `auditkit.stats.uncertainty.DocLosses` — are given, the evaluation documents as one block shared
    by every candidate) through the engine with `rules`. Pure and deterministic.

    Refused, with the reason in `note`, when a host has fewer than `MIN_CELLS_PER_HOST` cells: the
    bootstrap of n draws has variance (n - 1)/n of the sample's and few distinct resamples, so a
    candidate that wins every cell would get P = 1 and rank interval [1, 1] whatever its margins.
    `se` (the rows' single-score standard errors) is never drawn: every candidate is scored on the
    same tokens, so that noise is shared and changes no rank or gap (docs/STATISTICS.md)."""
    gate = decision.gate
    n = len(decision.cells)
    elig = [c for c in decision.candidates if c.eligible]
    ids = [c.config_id for c in elig]
    base = dict(gate=gate, cells=n, candidates=len(decision.candidates), eligible=len(elig))
    if not elig or n == 0:
        return GateRobustness(**base, method="not resampled", resamples=0,
                              note="no eligible candidate" if n else "the rules select no cell")
    if len(elig) * n > MAX_ENTRIES:
        return GateRobustness(**base, method="not resampled", resamples=0,
                              note=f"{len(elig)} candidates x {n} cells exceeds {MAX_ENTRIES} values")
    values = np.array([c.values for c in elig], dtype=np.float64)
    margin = _margin(rules, decision, values, ids)
    sens = _sensitivity(rules, decision, values, ids)
    groups = _host_groups(decision.cells)
    fewest = min(len(g) for g in groups)
    if fewest < MIN_CELLS_PER_HOST:
        return GateRobustness(**base, method="not resampled", resamples=0, **margin, sensitivity=sens,
                              note=(f"refused: {fewest} cell(s) per host; a bootstrap within hosts needs at least "
                                    f"{MIN_CELLS_PER_HOST} to say anything about P(promoted), rank intervals or "
                                    "P(flip); see each check's interval and call (replay-gate --json)"))
    nats = None
    if docs is not None:
        try:
            nats = np.array([[docs.nats[(cid, k)] for k in range(n)] for cid in ids], dtype=np.float64)
        except KeyError:
            nats = None
    method, draws, count = _draws(groups, gate, len(ids) * n, nats is not None)
    rrules = _resample_rules(rules, n, ids)
    doc_rng = np.random.default_rng([SEED, zlib.crc32(gate.encode()), 2])
    nb = None if nats is None else np.asarray(docs.bytes, dtype=np.float64)

    promoted_w: dict[str, list[float]] = {c: [] for c in ids}
    rank1_w: dict[str, list[float]] = {c: [] for c in ids}
    ranks: dict[str, list[tuple[float, float]]] = {c: [] for c in ids}
    flips: dict[int, list[float]] = {i: [] for i in range(len(decision.checks))}
    check_values: dict[int, list[tuple[float, float]]] = {i: [] for i in range(len(decision.checks))}
    cache: dict[tuple[int, ...], Decision] = {}
    for combo, w in draws:
        if nats is not None:   # one document resample, shared by every candidate and cell
            wdoc = np.bincount(doc_rng.integers(0, len(nb), size=len(nb)), minlength=len(nb)).astype(np.float64)
            v = (nats @ wdoc) / (math.log(2) * float(nb @ wdoc))
            d = decide_columns(rrules, _columns(v[:, list(combo)], ids), ids)
        else:
            key = tuple(sorted(combo))
            if key not in cache:
                cache[key] = decide_columns(rrules, _columns(values[:, list(key)], ids), ids)
            d = cache[key]
        for cid in d.promoted:
            promoted_w[cid].append(w)
        for c in d.candidates:
            ranks[c.config_id].append((c.rank, w))
            if c.rank == 1:
                rank1_w[c.config_id].append(w)
        for i, (got, want) in enumerate(zip(d.checks, decision.checks)):
            if got.passed != want.passed:
                flips[i].append(w)
            if got.value is not None:
                check_values[i].append((got.value, w))

    lo_q, hi_q = (1 - LEVEL) / 2, 1 - (1 - LEVEL) / 2
    rows = tuple(CandidateRobustness(c.config_id, c.config_id in decision.promoted, c.rank,
                                     math.fsum(promoted_w[c.config_id]), math.fsum(rank1_w[c.config_id]),
                                     int(_quantile(ranks[c.config_id], lo_q)),
                                     int(_quantile(ranks[c.config_id], hi_q))) for c in elig)
    checks = []
    for i, ch in enumerate(decision.checks):
        vals = check_values[i]
        total = math.fsum(w for _, w in vals)
        norm = [(x, w / total) for x, w in vals] if total > 0 else []
        checks.append(CheckRobustness(i, ch.kind, ch.candidate, ch.reference, ch.passed, ch.value,
                                      _quantile(norm, lo_q) if norm else None,
                                      _quantile(norm, hi_q) if norm else None, math.fsum(flips[i])))
    return GateRobustness(**base, method=method, resamples=count, rows=rows, checks=tuple(checks), **margin,
                          sensitivity=sens)


def _margin(rules: dict, decision: Decision, values: np.ndarray, ids: list[str]) -> dict:
    """Last promoted on its rank vs first eliminated: gap, the standard error of their paired per-cell
    difference, gap / that, and the one-sided paired t-test (cells exchangeable)."""
    from scipy import special

    keep = set(rules["promote"].get("always_keep", []))
    order = sorted((c for c in decision.candidates if c.eligible), key=lambda c: c.rank)
    promoted = [c for c in order if c.config_id in decision.promoted]
    on_rank = [c for c in promoted if c.config_id not in keep] or promoted
    out_ = [c for c in order if c.config_id not in decision.promoted]
    if not on_rank or not out_:
        return {}
    a, b = on_rank[-1], out_[0]
    ia, ib = ids.index(a.config_id), ids.index(b.config_id)
    sign = 1.0 if Better(rules["metric"]["better"]) is Better.LOWER else -1.0
    diff = sign * (values[ib] - values[ia])  # > 0: the eliminated one is worse in that cell
    n = len(diff)
    margin = math.fsum(diff.tolist()) / n
    out = {"last_promoted": a.config_id, "first_eliminated": b.config_id, "margin": margin}
    noise, source, p = None, None, None
    if n >= 2 and float(np.std(diff, ddof=1)) > 0:
        noise, source = float(np.std(diff, ddof=1)) / math.sqrt(n), f"paired difference over {n} cells"
        p = float(special.stdtr(n - 1, -margin / noise))   # one-sided paired t (scipy.stats.ttest_rel's)
    out.update(noise=noise, noise_source=source, p_one_sided=p,
               margin_in_noise=None if noise is None else margin / noise)
    return out


def _sensitivity(rules: dict, decision: Decision, values: np.ndarray, ids: list[str]) -> tuple:
    """The promoted list under top_k within `SENSITIVITY_SPAN` of the frozen one and without
    always_keep, decided by the engine."""
    n = values.shape[1]
    cols = _columns(values, ids)
    keep = list(rules["promote"].get("always_keep", []))
    frozen_k = int(rules["promote"]["top_k"])
    out = []
    for k in range(max(1, frozen_k - SENSITIVITY_SPAN), min(len(ids), frozen_k + SENSITIVITY_SPAN) + 1):
        d = decide_columns(_resample_rules(rules, n, ids, top_k=k), cols, ids)
        out.append(("frozen" if k == frozen_k else f"top_k={k}", k, tuple(keep), d.promoted))
    if keep:
        d = decide_columns(_resample_rules(rules, n, ids, keep=[]), cols, ids)
        out.append(("no always_keep", frozen_k, (), d.promoted))
    if frozen_k > len(ids):
        out.append(("frozen", frozen_k, tuple(keep), decision.promoted))
    return tuple(out)


# --------------------------------------------------------------------------- host correlations

@dataclass(frozen=True)
class CorrelationInterval:
    n: int
    spearman: float | None
    ci_low: float | None
    ci_high: float | None
    ci_method: str
    p_permutation: float | None
    permutation_method: str


def _average_ranks(a: np.ndarray) -> np.ndarray:
    """Ranks 1..n along the last axis, ties given their average rank (scipy.stats.rankdata's default)."""
    import pandas as pd

    return pd.DataFrame(np.asarray(a)).rank(axis=1, method="average").to_numpy(dtype=np.float64, copy=True)


def _spearman_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman's rho of each row pair (average ranks for ties); NaN where a row is constant."""
    ra, rb = _average_ranks(a), _average_ranks(b)
    ra -= ra.mean(axis=1, keepdims=True)
    rb -= rb.mean(axis=1, keepdims=True)
    den = np.sqrt((ra * ra).sum(axis=1) * (rb * rb).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = (ra * rb).sum(axis=1) / den
    rho[den == 0] = np.nan
    return rho


PERMUTATIONS = 9999   # random pairings where n! is larger


def correlation_interval(a: list[float], b: list[float], key: str) -> CorrelationInterval:
    """Spearman of paired values `a`, `b` (one pair per candidate) with a Fisher z interval
    (`fisher_z_interval`) and a one-sided permutation p-value of an agreement at least as strong:
    exact over all n! pairings while n! <= 9999, else 9999 seeded random pairings, p = (k + 1) /
    (9999 + 1) (as scipy.stats.permutation_test counts them); beyond `PERMUTATION_LIMIT`
    candidates the t approximation scipy.stats.spearmanr uses. `key` seeds the draws."""
    from scipy import special

    n = len(a)
    if n < 3:
        return CorrelationInterval(n, None, None, None, "not computed: fewer than 3 candidates", None, "not computed")
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    rho = float(_spearman_rows(x[None, :], y[None, :])[0])
    rng = np.random.default_rng([SEED, zlib.crc32(key.encode())])
    lo, hi, how = fisher_z_interval(rho, n, LEVEL)
    tol = 1e-12 * max(1.0, abs(rho)) if math.isfinite(rho) else 0.0
    if n <= PERMUTATION_LIMIT and math.factorial(n) <= PERMUTATIONS:
        perms = np.array(list(permutations(range(n))), dtype=np.int64)
        rhos = _spearman_rows(np.broadcast_to(x, perms.shape), y[perms])
        p = float(np.mean(rhos >= rho - tol))
        pm = f"exact over all {len(perms)} pairings, one-sided (agreement at least as strong)"
    elif n <= PERMUTATION_LIMIT:
        perms = rng.permuted(np.tile(np.arange(n), (PERMUTATIONS, 1)), axis=1)
        rhos = _spearman_rows(np.broadcast_to(x, perms.shape), y[perms])
        p = float((np.sum(rhos >= rho - tol) + 1) / (PERMUTATIONS + 1))
        pm = f"{PERMUTATIONS} random pairings (seed {SEED}), one-sided (agreement at least as strong)"
    else:   # many candidates: the t approximation scipy.stats.spearmanr uses is accurate, and cheap
        t = rho * math.sqrt((n - 2) / max(1e-300, 1 - rho * rho))
        p = float(special.stdtr(n - 2, -t))
        pm = f"t approximation for {n} candidates (as scipy.stats.spearmanr), one-sided (agreement at least as strong)"
    return CorrelationInterval(n, rho, lo, hi, how, p, pm)


def fisher_z_interval(rho: float, n: int, level: float = LEVEL) -> tuple[float | None, float | None, str]:
    """(low, high, method) for Spearman's rho of n pairs: Fisher's z = atanh(rho) with the
    Bonett-Wright variance (1 + rho^2 / 2) / (n - 3). None (and the reason) for n < 4, where no
    interval says anything, and for |rho| = 1 or an undefined rho, where z is infinite."""
    from scipy import special

    if n < 4:
        return None, None, f"not computed: {n} candidates (Fisher z needs at least 4)"
    if not math.isfinite(rho) or abs(rho) >= 1:
        return None, None, f"not computed: rho = {rho:g} over {n} candidates (Fisher z is infinite at |rho| = 1)"
    se = math.sqrt((1 + rho * rho / 2) / (n - 3))
    q = float(special.ndtri(1 - (1 - level) / 2))
    z = math.atanh(rho)
    return math.tanh(z - q * se), math.tanh(z + q * se), \
        f"Fisher z, Bonett-Wright variance (1 + rho^2/2)/(n - 3), {n} candidates"


def host_baseline(values: np.ndarray, hosts: list[str], seeds: list) -> dict | None:
    """Host sensitivity against its baseline, from one gate's cells. `values`: candidates x (hosts x
    seeds, host-major). Mean Spearman over pairs of cells on different hosts with the same seed
    (`cross_host`) and over pairs on the same host with different seeds (`cross_seed`, the baseline:
    how much rankings move with the seed alone); `difference` = cross_seed - cross_host (> 0: hosts
    disagree more than seeds do). One-sided p: the share of the balanced reassignments of cells to
    hosts (every split of the cells into groups of the hosts' sizes, at most 5,000) whose difference
    is at least the observed one. None below 3 candidates, 2 hosts or 2 seeds."""
    nc = values.shape[0]
    h, s = len(hosts), len(seeds)
    if nc < 3 or h < 2 or s < 2:
        return None
    ncell = h * s
    pairs = [(i, j) for i in range(ncell) for j in range(i + 1, ncell)]
    rho = _spearman_rows(values[:, [i for i, _ in pairs]].T, values[:, [j for _, j in pairs]].T)
    seed_of = [k % s for k in range(ncell)]

    def diff(host_of) -> float:
        cross = [r for (i, j), r in zip(pairs, rho) if host_of[i] != host_of[j] and seed_of[i] == seed_of[j]]
        within = [r for (i, j), r in zip(pairs, rho) if host_of[i] == host_of[j]]
        cross, within = [r for r in cross if r == r], [r for r in within if r == r]
        if not cross or not within:
            return math.nan
        return float(np.mean(within) - np.mean(cross)), float(np.mean(cross)), float(np.mean(within))

    observed = diff([k // s for k in range(ncell)])
    if not isinstance(observed, tuple):
        return None
    # reassignments: each seed's cells permuted across hosts (keeps one cell per host and seed)
    perms = list(permutations(range(h)))
    total = len(perms) ** s
    if total > 5000:
        return {"cross_host": observed[1], "cross_seed": observed[2], "difference": observed[0], "p": None,
                "method": f"{total} reassignments: too many to enumerate; no p-value"}
    count = ok = 0
    for combo in product(perms, repeat=s):
        host_of = [combo[k % s][k // s] for k in range(ncell)]
        d = diff(host_of)
        if isinstance(d, tuple):
            ok += 1
            count += d[0] >= observed[0] - 1e-12
    return {"cross_host": observed[1], "cross_seed": observed[2], "difference": observed[0],
            "p": count / ok if ok else None,
            "method": f"exact over the {ok} reassignments of each seed's cells to hosts, one-sided"}


# --------------------------------------------------------------------------- tables

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
    sel = rows[rows["stage"].isin(stages) & rows["config_id"].isin([c.config_id for c in elig])]
    steps_of = {(c, h, int(s)): int(v) for c, h, s, v in zip(sel["config_id"], sel["host"], sel["seed"], sel["steps"])}
    steps = {c.config_id: np.array([[steps_of.get((c.config_id, h, s), 0) for s in seeds] for h in hosts],
                                   dtype=np.float64) for c in elig}
    flagged = {cid: tp.flags(st) for cid, st in steps.items()}
    out = []
    for c in elig:
        med = np.median(steps[c.config_id], axis=-1)
        for i, h in enumerate(hosts):
            for j, s in enumerate(seeds):
                if flagged[c.config_id][i, j]:
                    out.append((dec.gate, "run", c.config_id, None, f"{h}/{s}", int(steps[c.config_id][i, j]),
                                float(med[i]), True, None, None, None, None))
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
    """The `robustness` tables of a package (`tables._Package` `p`): `robustness` (per gate and
    candidate), `robustness_checks`, `robustness_gates` (method, margin, noise),
    `promotion_sensitivity` and `host_correlation_interval`. Only gates with a recorded
    decision, like the other tables; each decided again from the raw rows."""
    from auditkit.gates.outcomes import decide_all
    from auditkit.derived.tables import Table, _hosts

    from auditkit.package.evaldocs import gate_doc_losses
    from auditkit.package.store import open_package
    from auditkit.stats.uncertainty import apply_holm, gate_uncertainty

    kind = "robustness"
    outcomes = decide_all(p.pkg) if p.decisions else {}
    store = open_package(p.pkg)
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
        docs, _why = gate_doc_losses(store, o.rules, o.decision)
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
    host_tab = _hosts(p)[0]
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
