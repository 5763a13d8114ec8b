"""Every gate of a package decided from its raw rows alone: the gate pipeline's entry point for
what is built on the rows rather than on the recorded decisions (the report's gate section,
claims, robustness).

`decide_all(package)` reads each gate's frozen rules and the run rows they select (`StoreSource`,
through the store) and decides with the engine, exactly as `replay-gate` does. A gate whose
candidates are ``promoted-by:<gate>`` takes the promoted list that *this* chain of raw-row
decisions gives (replay uses the recorded one and reports any difference); the walk over gates
and its cycle check are `auditkit.gates.chain`'s. A gate that cannot be decided carries the
reason instead of a decision.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from auditkit.errors import AuditError
from auditkit.gates.chain import GateWalk, resolve_candidates
from auditkit.gates.documents import gate_inputs, matrix_config_ids
from auditkit.gates.engine import Decision, DuplicateRowError
from auditkit.gates.rules import validate_rules
from auditkit.gates.pipeline import StoreSource, decide_rows
from auditkit.package.columns import MAX_RUN_CSV_BYTES, concat_rows, csv_header, text_frame
from auditkit.package.store import PackageStore


@dataclass(frozen=True)
class GateOutcome:
    """One gate decided from the raw rows (or why it could not be)."""

    gate: str
    rules_path: str
    rules: dict | None = None
    decision: Decision | None = None
    se: np.ndarray | None = None      # candidates x cells (decision order): the rows' `<metric>_se`, NaN where absent
    inputs: tuple[str, ...] = ()
    error: str = ""                    # why it could not be decided; "" when decided

    @property
    def decided(self) -> bool:
        return self.decision is not None


class _Undecided(Exception):
    """A gate that cannot be decided, and why (its outcome)."""

    def __init__(self, outcome: GateOutcome):
        self.outcome = outcome


def decide_all(package_dir: str | Path | PackageStore) -> dict[str, GateOutcome]:
    """Each gate of the package's protocol, in protocol order, every byte read through the
    package's store. Raises AuditError only when the package itself cannot be read (no
    directory, no or broken protocol.json). This is the gate pipeline's entry point for
    everything built on the raw rows alone (claims, robustness, the report's gate section)."""
    src = StoreSource(package_dir)

    def cycle(gate: str, path: tuple[str, ...]) -> GateOutcome:
        return GateOutcome(gate, src.protocol.gate(gate).rules,
                           error="promoted-by gates form a cycle: " + " -> ".join(path))

    def visit(gate: str, follow: GateWalk[GateOutcome]) -> GateOutcome:
        try:
            return _decide_one(src, gate, follow)
        except _Undecided as exc:
            return exc.outcome
        except AuditError as exc:
            return GateOutcome(gate, src.protocol.gate(gate).rules,
                               error=(f"{exc.path}: " if exc.path else "") + exc.message)

    follow = GateWalk(visit, cycle)
    return {g.gate: follow(g.gate) for g in src.protocol.gates}


def _decide_one(src: StoreSource, gate: str, follow: GateWalk[GateOutcome]) -> GateOutcome:
    pkg, protocol = src.store, src.protocol
    g = protocol.gate(gate)
    rules = src.json(g.rules)
    bad = validate_rules(rules, g.rules)
    if bad:
        return GateOutcome(gate, g.rules, error=f"rules are not valid: {bad[0]}")

    def promoted(parent: str) -> list[str]:
        try:
            protocol.gate(parent)
        except KeyError:
            raise _Undecided(GateOutcome(gate, g.rules, rules, error=f"candidates name gate {parent!r}, "
                                                                      "which the protocol lacks")) from None
        up = follow(parent)
        if not up.decided:
            raise _Undecided(GateOutcome(gate, g.rules, rules, error=f"its candidates come from gate {parent}, "
                                                                     f"which could not be decided ({up.error})"))
        return list(up.decision.promoted)

    candidates = resolve_candidates(rules["inputs"]["candidates"], matrix=lambda: matrix_config_ids(pkg, protocol),
                                    promoted=promoted)
    paths = gate_inputs(pkg, rules)
    missing = [p for p in paths if pkg.kind(p) is None]   # a link or FIFO is the reader's PackageDefect
    if missing:
        return GateOutcome(gate, g.rules, rules, inputs=tuple(paths), error=f"input run CSV missing: {missing[0]}")
    metric = rules["metric"]["column"]
    df = concat_rows([src.frame(p, metric) for p in paths])
    try:
        decision = decide_rows(rules, df, candidates)
    except DuplicateRowError as exc:
        return GateOutcome(gate, g.rules, rules, inputs=tuple(paths), error=str(exc))
    se = _standard_errors(pkg, paths, metric, df, decision)
    return GateOutcome(gate, g.rules, rules, decision, se, tuple(paths))


def _standard_errors(store: PackageStore, paths: list[str], metric: str, df: pd.DataFrame,
                     decision: Decision) -> np.ndarray | None:
    """The optional `<metric>_se` column (SPEC v1.1) laid out like the decision's values; None
    when no input file has the column."""
    col = f"{metric}_se"
    parts = []
    for rel in paths:
        data = store.read_bytes(rel, MAX_RUN_CSV_BYTES)
        if col in csv_header(data, rel):
            se = text_frame(data, rel, [col])[col]
            parts.append(pd.to_numeric(se, errors="coerce").to_numpy(dtype=np.float64))
        else:
            parts.append(np.full(int((df["_file"] == rel).sum()), np.nan))
    if all(np.isnan(p).all() for p in parts):
        return None
    se_all = np.concatenate(parts) if parts else np.zeros(0)
    where = {(c, h, int(s)): i for i, (c, h, s) in
             enumerate(zip(df["config_id"].tolist(), df["host"].tolist(), df["seed"].tolist()))}
    out = np.full((len(decision.candidates), len(decision.cells)), np.nan)
    for i, c in enumerate(decision.candidates):
        for j, (h, s) in enumerate(decision.cells):
            k = where.get((c.config_id, h, s))
            if k is not None:
                out[i, j] = se_all[k]
    return out
