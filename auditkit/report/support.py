"""What the data support, claim by claim: `held`, `not_held` or `undetermined` at a level, beside the
point-estimate outcome `auditkit claims` replays (docs/STATISTICS.md).

- `gate_check` of a thresholded rule: the check's call (`auditkit.stats.uncertainty`): the claim is
  held when the data support the outcome it states, not held when they support the opposite;
- `gate_check` of ranks-first, `rank` 1 (overall or in every cell) and `promotion` `mean_best`: the
  intersection-union test that the candidate is better on average than every other eligible
  candidate (held for a claim that it is best; for a claim that it is not, held when some other
  candidate is shown better);
- `host_sensitivity` on Spearman: Fisher z with the Bonett-Wright variance against the claim's
  bounds (undetermined below 4 candidates);
- facts of the frozen rules and the accounting (promoted, eliminated, ineligible, table values,
  other ranks) are exact given the rows: the call is the outcome, with no p-value.

The p-values of the claims and of every gate check form one family: Holm's adjustment.
"""

from __future__ import annotations

import math
from dataclasses import replace

from auditkit.stats.uncertainty import Interval, gate_uncertainty, holm, threshold_call

HELD, NOT_HELD, UNDETERMINED = "held", "not_held", "undetermined"


def support_all(ctx, claims: list[dict], results: list, level: float) -> list:
    """`results` (ClaimResult, in claim order) with their call, interval and p; Holm across the claims
    and every gate check of the package."""
    unc = {}
    for name, o in ctx.gates.items():
        if o.decided:
            docs, _why = ctx.doc_losses(name)
            unc[name] = (gate_uncertainty(o.decision, o.rules, level, docs), docs)
    out = []
    for claim, r in zip(claims, results):
        if r.outcome.value == "not_checkable":
            out.append(replace(r, level=level, basis="not checkable"))
            continue
        try:
            call, low, high, p, basis = _support(ctx, unc, claim["check"], r, level)
        except (KeyError, ValueError, TypeError) as exc:   # a claim the outcome could decide but no test covers
            call, low, high, p, basis = UNDETERMINED, None, None, None, f"no test: {exc}"
        if call == HELD and r.outcome.value != "held":
            # the test is about averages; a claim the recorded cells contradict is not made true by it
            call, basis = UNDETERMINED, basis + "; the recorded cells do not bear the claim out"
        out.append(replace(r, call=call, level=level, low=low, high=high, p=p, basis=basis))
    gates = [u for u, _ in unc.values()]
    check_ps = [e.get("p") for u in gates for e in u.checks]
    adj = holm([r.p for r in out] + check_ps)
    alpha = (1 - level) / 2
    final = []
    for r, pa in zip(out, adj[:len(out)]):
        ch = r.call if pa is not None and pa <= alpha else (r.call if r.p is None else UNDETERMINED)
        final.append(replace(r, p_holm=_f(pa), call_holm=ch))
    return final


def _f(x):
    return None if x is None or not math.isfinite(x) else float(round(x, 12))


def _support(ctx, unc, c: dict, r, level: float):
    kind = c["kind"]
    exact = ((HELD if r.outcome.value == "held" else NOT_HELD), None, None, None,
             "exact: a fact of the frozen rules (or the accounting) on the recorded rows")
    if kind == "gate_check":
        u, docs = unc[c["gate"]]
        entry = next(e for e in u.checks if e["kind"] == c["check"] and e["candidate"] == c["candidate"]
                     and (c.get("reference") is None or e["reference"] == c["reference"]))
        want_pass = c["expected"] == "PASS"
        if entry["kind"] == "ranks_first_in_all_cells":
            return _best(ctx, unc, c["gate"], c["candidate"], want_pass, level)
        if entry["se"] is None:
            return UNDETERMINED, None, None, None, entry.get("reason", "no interval")
        iv = Interval(entry["estimate"], entry["se"], entry["df"], entry["method"])
        call, p = threshold_call(entry["kind"], iv, entry["threshold"], want_pass, level)
        opp, _ = threshold_call(entry["kind"], iv, entry["threshold"], not want_pass, level)
        verdict = HELD if call != "undetermined" else NOT_HELD if opp != "undetermined" else UNDETERMINED
        return verdict, entry["low"], entry["high"], p, f"{entry['method']} interval of the gap against " \
                                                        f"threshold {entry['threshold']:g}"
    if kind == "rank":
        if c.get("rank", 1) != 1 or c["scope"] == "no_cell":
            return exact
        return _best(ctx, unc, c["gate"], ctx.candidate(c["candidate"]), True, level)
    if kind == "promotion":
        if c["fact"] != "mean_best":
            return exact
        return _best(ctx, unc, c["gate"], ctx.candidate(c["candidate"]), bool(c["expected"]), level)
    if kind == "host_sensitivity" and c["statistic"] == "spearman":
        return _spearman(ctx, c, level)
    return exact


def _best(ctx, unc, gate: str, cid: str, claim_best: bool, level: float):
    """Intersection-union test: is `cid` better on average than every other eligible candidate?"""
    u, _docs = unc[gate]
    o = ctx.gates[gate]
    rules = {**o.rules, "checks": [{"kind": "ranks_first_in_all_cells", "candidate": cid}]}
    from auditkit.gates.engine import CheckResult
    from dataclasses import replace as dc_replace

    dec = dc_replace(o.decision, checks=(CheckResult("ranks_first_in_all_cells", cid, None, None, None, claim_best),))
    e = gate_uncertainty(dec, rules, level, _docs).checks[0]
    m = e.get("margin") or {}
    basis = (f"intersection-union test over every other eligible candidate (smallest mean gap: "
             f"{m.get('versus')}, {m.get('method')})" if m else e.get("reason", "no test"))
    if e["p"] is None:
        return UNDETERMINED, None, None, None, basis
    # the opposite statement's test, for a not-held verdict
    dec2 = dc_replace(dec, checks=(CheckResult("ranks_first_in_all_cells", cid, None, None, None, not claim_best),))
    e2 = gate_uncertainty(dec2, rules, level, _docs).checks[0]
    verdict = HELD if e["call"] != "undetermined" else NOT_HELD if e2["call"] != "undetermined" else UNDETERMINED
    return verdict, m.get("low"), m.get("high"), e["p"], basis


def _spearman(ctx, c: dict, level: float):
    from scipy import special

    from auditkit.stats.correlation import fisher_z_interval

    a, b = sorted(c["hosts"])
    t = ctx.tables().get("host_correlation")
    row = next(dict(zip(t.columns, r)) for r in t.rows if r[0] == c["stage"] and r[1] == a and r[2] == b)
    rho, n = row["spearman"], row["n"]
    lo, hi, how = fisher_z_interval(rho, n, level)
    if lo is None:
        return UNDETERMINED, None, None, None, how
    se = math.sqrt((1 + rho * rho / 2) / (n - 3))
    z = math.atanh(rho)

    def p_side(bound: float, below: bool) -> float:   # one-sided p that rho < bound (below) or > bound
        zb = math.atanh(max(-0.999999, min(0.999999, bound)))
        return float(special.ndtr((z - zb) / se if below else (zb - z) / se))

    ps = []
    opp = []
    if "at_most" in c:
        ps.append(p_side(c["at_most"], True))
        opp.append(p_side(c["at_most"], False))
    if "at_least" in c:
        ps.append(p_side(c["at_least"], False))
        opp.append(p_side(c["at_least"], True))
    alpha = (1 - level) / 2
    p = max(ps)
    verdict = HELD if p <= alpha else NOT_HELD if min(opp) <= alpha else UNDETERMINED
    return verdict, lo, hi, p, how
