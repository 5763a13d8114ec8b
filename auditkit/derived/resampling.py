"""How robust is each gate's decision? Resampling a decided gate through the engine, seeded and
byte-stable (pure: no I/O).

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

The `robustness` tables (`auditkit.derived.robustness`) are built on it.
"""

from __future__ import annotations

import math
import zlib
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from itertools import combinations_with_replacement, product

import numpy as np
import pandas as pd

from auditkit.gates.engine import Better, Decision, decide_columns
from auditkit.stats.correlation import LEVEL, SEED  # one seed and level for all of a package's resampling

RESAMPLES = 1000
EXACT_LIMIT = 2000           # distinct cell multisets enumerated exactly
MAX_ENTRIES = 20_000         # candidates x cells above which a gate is not resampled (stated in its row)
VALUE_BUDGET = 2_000_000     # values decided per gate: fewer draws for large ones
MIN_RESAMPLES = 200
SENSITIVITY_SPAN = 3         # top_k variants: the frozen top_k +- this many


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
    """The label columns of `_columns` (shared by every resample of a gate; never mutated), as
    categoricals: the engine maps their few categories, not every row, on each of the draws."""
    nc = len(candidates)
    zeros = np.zeros(nc * n, dtype=np.int8)
    return {"stage": pd.Categorical.from_codes(zeros, ["resample"]),
            "host": pd.Categorical.from_codes(np.tile(np.arange(n), nc), [f"r{j:03d}" for j in range(n)]),
            "seed": np.zeros(nc * n, dtype=np.int64),
            "config_id": pd.Categorical.from_codes(np.repeat(np.arange(nc), n), list(candidates)),
            "status": pd.Categorical.from_codes(zeros, ["ok"])}


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
