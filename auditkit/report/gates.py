"""Every gate of a package decided from its raw rows, through the engine replay uses.

`decide_all(package_dir)` loads each gate's frozen rules and the run rows they
select and calls `rules.decide_columns`, exactly as `replay-gate` does. A gate whose
candidates are ``promoted-by:<gate>`` takes the promoted list that *this* chain of
raw-row decisions gives (replay uses the recorded one and reports any difference), so
everything built on it — claims, robustness, reasons — follows from the raw rows
alone. A gate that cannot be decided carries the reason instead of a decision.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from auditkit.errors import AuditError
from auditkit.package.protocol import Protocol
from auditkit.gates.replay import (MAX_RUN_CSV_BYTES, gate_inputs, load_gate_rows, matrix_config_ids,
                                   package_protocol, package_store, read_json)
from auditkit.package.store import PackageStore
from auditkit.gates.engine import Decision, DuplicateRowError, decide_columns, validate_rules


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


def decide_all(package_dir: str | Path | PackageStore) -> dict[str, GateOutcome]:
    """Each gate of the package's protocol, in protocol order, every byte read through the
    package's store. Raises AuditError only when the package itself cannot be read (no
    directory, no or broken protocol.json)."""
    pkg = package_store(package_dir)
    protocol = package_protocol(pkg)
    out: dict[str, GateOutcome] = {}
    for g in protocol.gates:
        _decide(pkg, protocol, g.gate, out, ())
    return {g.gate: out[g.gate] for g in protocol.gates}


def _decide(pkg: PackageStore, protocol: Protocol, gate: str, done: dict, stack: tuple) -> GateOutcome:
    if gate in done:
        return done[gate]
    g = protocol.gate(gate)
    if gate in stack:
        res = GateOutcome(gate, g.rules, error="promoted-by gates form a cycle: " + " -> ".join(stack + (gate,)))
        done[gate] = res
        return res
    try:
        res = _decide_one(pkg, protocol, gate, done, stack + (gate,))
    except AuditError as exc:
        res = GateOutcome(gate, g.rules, error=(f"{exc.path}: " if exc.path else "") + exc.message)
    done[gate] = res
    return res


def _decide_one(pkg: PackageStore, protocol: Protocol, gate: str, done: dict, stack: tuple) -> GateOutcome:
    g = protocol.gate(gate)
    rules = read_json(pkg, g.rules)
    bad = validate_rules(rules, g.rules)
    if bad:
        return GateOutcome(gate, g.rules, error=f"rules are not valid: {bad[0]}")
    spec = rules["inputs"]["candidates"]
    if spec == "matrix":
        candidates = matrix_config_ids(pkg, protocol)
    elif isinstance(spec, str) and spec.startswith("promoted-by:"):
        parent = spec.split(":", 1)[1]
        try:
            protocol.gate(parent)
        except KeyError:
            return GateOutcome(gate, g.rules, rules, error=f"candidates name gate {parent!r}, which the protocol lacks")
        up = _decide(pkg, protocol, parent, done, stack)
        if not up.decided:
            return GateOutcome(gate, g.rules, rules, error=f"its candidates come from gate {parent}, which could "
                                                           f"not be decided ({up.error})")
        candidates = list(up.decision.promoted)
    else:
        candidates = list(spec)
    paths = gate_inputs(pkg, rules)
    missing = [p for p in paths if pkg.kind(p) is None]   # a link or FIFO is the reader's PackageDefect
    if missing:
        return GateOutcome(gate, g.rules, rules, inputs=tuple(paths), error=f"input run CSV missing: {missing[0]}")
    metric = rules["metric"]["column"]
    df = load_gate_rows(pkg, paths, metric)
    cols = {"stage": df["stage"].to_numpy(), "host": df["host"].to_numpy(), "seed": df["seed"].to_numpy(),
            "config_id": df["config_id"].to_numpy(), "status": df["status"].to_numpy(),
            "value": df["value"].to_numpy(),
            "where": [f"{f} row {r}" for f, r in zip(df["_file"].tolist(), df["_row"].tolist())]}
    try:
        decision = decide_columns(rules, cols, candidates)
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
        head = pd.read_csv(io.BytesIO(data), dtype=str, keep_default_na=False, nrows=0)
        if col in head.columns:
            se = pd.read_csv(io.BytesIO(data), dtype=str, keep_default_na=False, usecols=[col])[col]
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
