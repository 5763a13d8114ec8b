"""A paper's claims, each decided from the package's raw rows (`claims.json`, SPEC v1.1).

Each claim holds the sentence as the paper states it and one check (`ClaimKind`):

- `gate_check`: a frozen check of a gate has the stated outcome (PASS/FAIL);
- `rank`: a candidate has a given rank overall, in every cell, or in no cell of a gate;
- `table_value`: a derived table's cell equals a value within a tolerance;
- `promotion`: a candidate was (not) promoted / eliminated / ineligible / the mean-best at
  a gate (the candidate may be ``{"winner_of": GATE}``, the first-ranked there);
- `host_sensitivity`: a host-pair rank correlation at a stage is within bounds.

`evaluate_claims(package_dir)` decides every gate from the raw rows with the engine
replay uses (`auditkit.gates.outcomes.decide_all`) and regenerates the tables in memory
(`tables.build_tables`); nothing recorded by the package's author is taken on trust.
Each claim is `held`, `not_held` or `not_checkable` (with the reason).
What a finished study's own rows show (observations.json: they hold by construction; they are
not claims) is `auditkit.derived.observations`'; its names are re-exported here.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from enum import Enum
from pathlib import Path

from auditkit.errors import AuditError
from auditkit.findings import Finding, Report, json_location
from auditkit.derived.package_data import DecidedGates
from auditkit.gates.outcomes import GateOutcome
from auditkit.package.schemas import validate_document

CLAIMS_FILE = "claims.json"


class ClaimKind(str, Enum):
    GATE_CHECK = "gate_check"
    RANK = "rank"
    TABLE_VALUE = "table_value"
    PROMOTION = "promotion"
    HOST_SENSITIVITY = "host_sensitivity"


class ClaimOutcome(str, Enum):
    HELD = "held"
    NOT_HELD = "not_held"
    NOT_CHECKABLE = "not_checkable"


@dataclass(frozen=True)
class ClaimResult:
    id: str
    statement: str
    kind: str
    outcome: ClaimOutcome
    expected: str      # what the claim says, in the check's terms
    found: str         # what the raw rows give ("" when not checkable)
    evidence: str      # where it comes from: gate, cells, table, files
    command: str       # the command that shows it
    why: str = ""      # why not checkable
    # what the data support at `level` (auditkit.stats.uncertainty): held / not_held / undetermined,
    # beside the point-estimate `outcome`; `basis` says how (the test, or why there is none)
    call: str = "undetermined"
    level: float = 0.95
    low: float | None = None
    high: float | None = None
    p: float | None = None
    p_holm: float | None = None
    call_holm: str = "undetermined"
    basis: str = ""

    def to_dict(self) -> dict:
        d = asdict(self)
        d["outcome"] = self.outcome.value
        return d


class _NotCheckable(Exception):
    pass


# --------------------------------------------------------------------------- loading

def load_claims(path: str | Path) -> dict:
    """A claims document, read through the store (no-follow, regular files only, size cap, strict JSON:
    no duplicate key, no number that overflows, no NaN) and schema-checked. Raises AuditError (could
    not check) naming every problem: missing, a link or FIFO, unreadable, not strict JSON, not valid
    against `claims.schema.json`, repeated ids."""
    from auditkit.errors import PackageDefect
    from auditkit.package.store import PackageStore, loads_strict

    path = Path(path)
    try:
        store = PackageStore(path.parent if str(path.parent) else ".")
        if store.kind(path.name) is None:
            raise FileNotFoundError(path)
        data = store.read_bytes(path.name)
        doc = loads_strict(data, path.name)
    except FileNotFoundError:
        raise AuditError("no claims file", path=str(path),
                         hint="write claims.json (docs/SPEC.md, 'v1.1: claims.json') or pass --claims FILE; a study's "
                              "own observations (observations.json) are not claims") from None
    except PackageDefect as exc:
        f = exc.finding
        raise AuditError(f"cannot read the claims file: {f.message}" + (f" ({f.location})" if f.location else "")
                         + (f"; found {f.found}" if f.found else ""), path=str(path),
                         hint=f.hint or "a claims file is a regular UTF-8 file of strict JSON") from None
    except OSError as exc:
        raise AuditError(f"cannot read the claims file: {exc}", path=str(path)) from exc
    bad = validate_document(doc, "claims", path.name)
    if bad:
        detail = "; ".join(f"{f.location}: {f.found}" for f in bad[:5])
        raise AuditError(f"claims file is not valid ({len(bad)} problem(s)): {detail}", path=str(path),
                         hint="follow schemas/claims.schema.json (docs/SPEC.md, 'v1.1: claims.json')")
    seen: set[str] = set()
    for i, c in enumerate(doc["claims"]):
        if c["id"] in seen:
            raise AuditError(f"claim id {c['id']!r} repeats at {json_location(['claims', i, 'id'])}", path=str(path),
                             hint="give every claim its own id")
        seen.add(c["id"])
    return doc


def _no_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


# --------------------------------------------------------------------------- evaluation

class _Context:
    """What claims are decided from: every gate decided from the raw rows, tables built once."""

    def __init__(self, package_dir: Path, tables=None, decided: DecidedGates | None = None):
        self.pkg = package_dir
        self.decided = decided if decided is not None else DecidedGates(package_dir)
        self.gates: dict[str, GateOutcome] = self.decided.outcomes
        self._tables = None if tables is None else {t.id: t for t in tables}

    def tables(self) -> dict:
        if self._tables is None:
            from auditkit.derived.tables import build_tables

            self._tables = {t.id: t for t in build_tables(self.pkg, self.decided)}
        return self._tables

    def doc_losses(self, gate: str) -> tuple:
        """(DocLosses or None, note) of a decided gate, read once."""
        return self.decided.doc_losses(gate)

    def gate(self, name: str) -> GateOutcome:
        o = self.gates.get(name)
        if o is None:
            raise _NotCheckable(f"the protocol has no gate {name!r} (gates: {', '.join(self.gates) or 'none'})")
        if not o.decided:
            raise _NotCheckable(f"gate {name} could not be decided from the raw rows: {o.error}")
        return o

    def candidate(self, spec) -> str:
        if isinstance(spec, str):
            return spec
        g = self.gate(spec["winner_of"])
        first = [c for c in g.decision.candidates if c.eligible and c.rank == 1]
        if not first:
            raise _NotCheckable(f"gate {spec['winner_of']} has no eligible candidate, so no winner")
        return first[0].config_id


def evaluate_claims(package_dir: str | Path, claims: dict | str | Path | None = None, *,
                    tables=None, level: float = 0.95, decided: DecidedGates | None = None) -> list[ClaimResult]:
    """Every claim of `claims` (a document, a path, or the package's own `claims.json`), in order,
    each with its point-estimate `outcome` and the `call` the data support at `level`, its interval
    and its p-value Holm-adjusted across the package's claims and gate checks (one family).
    `tables`: the package's tables (`tables.build_tables`) when the caller has built them already;
    `decided`: its gates decided from the raw rows (`auditkit.derived.package_data.DecidedGates`), likewise.
    Raises AuditError when the package or the claims file cannot be read."""
    pkg = Path(package_dir)
    if claims is None:
        claims = pkg / CLAIMS_FILE
    doc = claims if isinstance(claims, dict) else load_claims(claims)
    if isinstance(claims, dict):
        bad = validate_document(doc, "claims", CLAIMS_FILE)
        if bad:
            raise AuditError(f"claims are not valid: {bad[0]}", hint="follow schemas/claims.schema.json")
    ctx = _Context(pkg, tables, decided)
    results = [_evaluate(ctx, c) for c in doc["claims"]]
    from auditkit.report.support import support_all

    return support_all(ctx, doc["claims"], results, level)


def _evaluate(ctx: _Context, claim: dict) -> ClaimResult:
    check = claim["check"]
    kind = ClaimKind(check["kind"])
    expected, command = _expected(kind, check), _command(kind, check, ctx.pkg)
    try:
        held, found, evidence = _DISPATCH[kind](ctx, check)
    except _NotCheckable as exc:
        return ClaimResult(claim["id"], claim["statement"], kind.value, ClaimOutcome.NOT_CHECKABLE, expected, "",
                           "", command, str(exc))
    return ClaimResult(claim["id"], claim["statement"], kind.value,
                       ClaimOutcome.HELD if held else ClaimOutcome.NOT_HELD, expected, found, evidence, command)


def _command(kind: ClaimKind, check: dict, pkg: Path) -> str:
    if kind in (ClaimKind.GATE_CHECK, ClaimKind.RANK, ClaimKind.PROMOTION):
        return f"auditkit replay-gate {check['gate']} --package {pkg}"
    if kind is ClaimKind.TABLE_VALUE:
        return f"auditkit tables --package {pkg} --check  # analysis/{check['table']}.csv"
    return f"auditkit tables --package {pkg} --check  # analysis/host_correlation.csv"


def _who(spec) -> str:
    return spec if isinstance(spec, str) else f"the winner of gate {spec['winner_of']}"


def _expected(kind: ClaimKind, c: dict) -> str:
    if kind is ClaimKind.GATE_CHECK:
        ref = f" vs {c['reference']}" if c.get("reference") else ""
        return f"check {c['check']} {c['candidate']}{ref} at gate {c['gate']}: {c['expected']}"
    if kind is ClaimKind.RANK:
        r = c.get("rank", 1)
        where = {"overall": "overall", "every_cell": "in every cell", "no_cell": "in no cell"}[c["scope"]]
        return f"{_who(c['candidate'])} has rank {r} {where} at gate {c['gate']}"
    if kind is ClaimKind.TABLE_VALUE:
        row = ", ".join(f"{k}={v}" for k, v in c["row"].items())
        return f"{c['table']} [{row}].{c['column']} = {c['value']} (± {c['tol']})"
    if kind is ClaimKind.PROMOTION:
        fact = {"promoted": "promoted", "eliminated": "eliminated", "ineligible": "ineligible",
                "mean_best": "the mean-best candidate"}[c["fact"]]
        return f"{_who(c['candidate'])} is {'' if c['expected'] else 'not '}{fact} at gate {c['gate']}"
    bounds = []
    if "at_least" in c:
        bounds.append(f">= {c['at_least']}")
    if "at_most" in c:
        bounds.append(f"<= {c['at_most']}")
    return f"{c['statistic']} of {c['hosts'][0]} vs {c['hosts'][1]} at stage {c['stage']} {' and '.join(bounds)}"


def _gate_evidence(o: GateOutcome) -> str:
    n = len(o.decision.cells)
    return (f"gate {o.gate} decided from the raw rows ({n} cell(s): "
            + ", ".join(f"{h}/{s}" for h, s in o.decision.cells) + f"; rules {o.rules_path})")


def _gate_check(ctx: _Context, c: dict):
    o = ctx.gate(c["gate"])
    matches = [ch for ch in o.decision.checks if ch.kind == c["check"] and ch.candidate == c["candidate"]
               and (c.get("reference") is None or ch.reference == c["reference"])]
    if not matches:
        raise _NotCheckable(f"the frozen rules of gate {c['gate']} ({o.rules_path}) have no check {c['check']} on "
                            f"{c['candidate']}" + (f" vs {c['reference']}" if c.get("reference") else ""))
    ch = matches[0]
    outcome = "PASS" if ch.passed else "FAIL"
    if ch.kind == "ranks_first_in_all_cells":
        value = "-" if ch.value is None else f"{int(ch.value)}/{len(o.decision.cells)} cells first"
    else:
        value = ("no value (a candidate is ineligible)" if ch.value is None
                 else f"value {ch.value:.9f}, threshold {ch.threshold:g}")
    return outcome == c["expected"], f"{value} -> {outcome}", _gate_evidence(o)


def _result(o: GateOutcome, cid: str):
    c = o.decision.candidate(cid)
    if c is None:
        raise _NotCheckable(f"{cid} is not a candidate at gate {o.gate} (candidates: "
                            + ", ".join(x.config_id for x in o.decision.candidates) + ")")
    return c


def _rank(ctx: _Context, c: dict):
    o = ctx.gate(c["gate"])
    cid = ctx.candidate(c["candidate"])
    res = _result(o, cid)
    want = c.get("rank", 1)
    if not res.eligible:
        return False, f"{cid} is ineligible ({res.reason})", _gate_evidence(o)
    cells = ", ".join(f"{h}/{s}: {r}" for (h, s), r in zip(o.decision.cells, res.cell_ranks))
    found = f"{cid}: overall rank {res.rank}; per cell {cells}"
    scope = c["scope"]
    if scope == "overall":
        held = res.rank == want
    elif scope == "every_cell":
        held = bool(res.cell_ranks) and all(r == want for r in res.cell_ranks)
    else:
        held = all(r != want for r in res.cell_ranks)
    return held, found, _gate_evidence(o)


def _promotion(ctx: _Context, c: dict):
    o = ctx.gate(c["gate"])
    cid = ctx.candidate(c["candidate"])
    res = _result(o, cid)
    fact = c["fact"]
    value = {"promoted": cid in o.decision.promoted,
             "eliminated": res.eligible and cid not in o.decision.promoted,
             "ineligible": not res.eligible,
             "mean_best": res.eligible and res.rank == 1}[fact]
    best = next((x for x in o.decision.candidates if x.eligible and x.rank == 1), None)
    mean = "-" if res.mean is None else f"{res.mean:.6f}"
    found = (f"{cid}: rank {res.rank if res.eligible else 'ineligible'}, mean {mean}; "
             f"{'promoted' if cid in o.decision.promoted else 'not promoted'}; mean-best "
             f"{best.config_id if best else 'none'}" + (f" ({best.mean:.6f})" if best else ""))
    return value == c["expected"], found, _gate_evidence(o)


def _table_cell(ctx: _Context, table: str, row: dict, column: str):
    tables = ctx.tables()
    t = tables.get(table)
    if t is None:
        raise _NotCheckable(f"no table {table!r} (tables: {', '.join(sorted(tables))})")
    missing = [k for k in list(row) + [column] if k not in t.columns]
    if missing:
        raise _NotCheckable(f"table {table} has no column(s) {missing} (columns: {', '.join(t.columns)})")
    idx = [t.columns.index(k) for k in row]
    hits = [r for r in t.rows if all(_same(r[i], v) for i, v in zip(idx, row.values()))]
    key = ", ".join(f"{k}={v}" for k, v in row.items())
    if not hits:
        raise _NotCheckable(f"table {table} has no row with {key}")
    if len(hits) > 1:
        raise _NotCheckable(f"table {table} has {len(hits)} rows with {key}; name the row by more columns")
    v = hits[0][t.columns.index(column)]
    return t, v


def _same(got, want) -> bool:
    if isinstance(want, bool) or isinstance(got, bool):
        return got is want
    if isinstance(want, (int, float)) and isinstance(got, (int, float)):
        return math.isclose(float(got), float(want), rel_tol=0, abs_tol=1e-9)
    return got == want


def _table_value(ctx: _Context, c: dict):
    t, v = _table_cell(ctx, c["table"], c["row"], c["column"])
    if v is None or isinstance(v, bool) or not isinstance(v, (int, float)):
        raise _NotCheckable(f"table {c['table']} column {c['column']} holds {v!r}, not a number")
    held = abs(float(v) - float(c["value"])) <= float(c["tol"])
    return held, f"{float(v):.6f}", (f"analysis/{t.id}.csv regenerated from " + ", ".join(t.inputs[:3])
                                     + (f" and {len(t.inputs) - 3} more file(s)" if len(t.inputs) > 3 else ""))


def _host_sensitivity(ctx: _Context, c: dict):
    a, b = sorted(c["hosts"])
    t, v = _table_cell(ctx, "host_correlation", {"stage": c["stage"], "host_a": a, "host_b": b}, c["statistic"])
    if v is None:
        raise _NotCheckable(f"{c['statistic']} at stage {c['stage']} is undefined (fewer than 2 common candidates)")
    held = ("at_least" not in c or v >= c["at_least"]) and ("at_most" not in c or v <= c["at_most"])
    n = next(r[t.columns.index("n")] for r in t.rows if r[0] == c["stage"] and r[1] == a and r[2] == b)
    found = f"{c['statistic']} {v:.6f} over {n} candidates"
    if c["statistic"] == "spearman":
        it = ctx.tables().get("host_correlation_interval")
        row = next((r for r in it.rows if r[:3] == (c["stage"], a, b)), None) if it else None
        if row is not None and row[5] is not None:
            found += (f" (95% interval [{row[5]:.3f}, {row[6]:.3f}], {row[8]}; "
                      f"permutation p = {row[9]:.4f})")
    return held, found, f"analysis/host_correlation.csv regenerated from the stage's run CSVs"


_DISPATCH = {
    ClaimKind.GATE_CHECK: _gate_check,
    ClaimKind.RANK: _rank,
    ClaimKind.TABLE_VALUE: _table_value,
    ClaimKind.PROMOTION: _promotion,
    ClaimKind.HOST_SENSITIVITY: _host_sensitivity,
}


def claims_report(results: list[ClaimResult], target: str, claims_path: str = CLAIMS_FILE) -> Report:
    """A Report whose findings are the claims that do not hold (`claim-not-held`) or cannot be
    checked (`claim-not-checkable`); exit code 1 if any."""
    rep = Report(command="claims", target=target)
    for i, r in enumerate(results):
        loc = json_location(["claims", i])
        if r.outcome is ClaimOutcome.NOT_HELD:
            rep.add(Finding(claims_path, "claim-not-held", loc, r.expected, r.found,
                            f"claim {r.id} ({r.statement!r}) does not hold on the raw rows; see: {r.command}"))
        elif r.outcome is ClaimOutcome.NOT_CHECKABLE:
            rep.add(Finding(claims_path, "claim-not-checkable", loc, r.expected, r.why,
                            f"claim {r.id} cannot be checked against this package"))
    rep.checked = {"claims": len(results)}
    counts = {o.value: sum(1 for r in results if r.outcome is o) for o in ClaimOutcome}
    rep.info = {"claims": ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in counts.items())}
    return rep


def render_claims(results: list[ClaimResult]) -> str:
    """Text: one block per claim (outcome, statement, expected, found, evidence, command)."""
    lines = []
    for r in results:
        data = "" if r.outcome is ClaimOutcome.NOT_CHECKABLE else f" | data: {r.call.replace('_', ' ')} at {r.level:g}"
        lines.append(f"[{r.outcome.value.replace('_', ' ').upper()}{data}] {r.id}: {r.statement}")
        lines.append(f"  claims:   {r.expected}")
        if r.outcome is ClaimOutcome.NOT_CHECKABLE:
            lines.append(f"  why not:  {r.why}")
        else:
            lines.append(f"  found:    {r.found}")
            iv = "" if r.low is None else f" [{r.low:.6g}, {r.high:.6g}]"
            p = "" if r.p is None else f", p {r.p:.3g}, Holm p {r.p_holm:.3g}"
            lines.append(f"  support:  {r.call.replace('_', ' ')} at {r.level:g}{iv}{p} ({r.basis})")
            lines.append(f"  evidence: {r.evidence}")
        lines.append(f"  command:  {r.command}")
    from auditkit.text import printable  # a statement from the package is one line, and drives no terminal

    return "\n".join(printable(line) for line in lines)
