"""Compute accounting: GPU-hours per stage and branch, planned from a protocol's definition alone
(`protocol_counterfactual`; a manifest's is `auditkit.app.derived.manifest_counterfactual`) and executed from the rows
(the `budget_counterfactual` table, `budget_table`)."""

from __future__ import annotations

import math

from auditkit.derived.package_data import TableSource
from auditkit.derived.table import Table, TableKind
from auditkit.errors import AuditError
from auditkit.package.protocol import parent_gate
from auditkit.package.protocol import Protocol, Stage


def stage_cells(stage: Stage) -> int:
    return len(stage.hosts) * len(stage.seeds)


def budget_seconds(stage: Stage) -> float | None:
    return float(stage.budget.value) if stage.budget.kind == "seconds" else None


def final_branch(protocol: Protocol) -> list[Stage]:
    """The final stage and the stages just before it that share its budget and candidates
    (the paper runs its 12 h branch as one stage per seed)."""
    last = protocol.stages[-1]
    out = []
    for s in reversed(protocol.stages):
        if s.budget != last.budget or s.candidates != last.candidates:
            break
        out.insert(0, s)
    return out


def _branch(protocol: Protocol) -> tuple[str, int, float | None]:
    """(label, cells, budget seconds) of the final branch."""
    stages = final_branch(protocol)
    return "+".join(s.stage for s in stages), sum(stage_cells(s) for s in stages), budget_seconds(stages[-1])


def _hours(n: int, cells: int, seconds: float | None) -> float | None:
    return None if seconds is None else n * cells * seconds / 3600.0


def protocol_counterfactual(protocol: Protocol, rules: dict[str, dict], matrix_size: int) -> list[dict]:
    """Planned GPU-hours of a protocol, from its definition alone (no data).

    A stage's candidate count is the matrix size (``matrix``), the named gate's
    ``top_k`` (``promoted-by:``) or the explicit list's length. Rows (dicts):
    ``item`` one of ``stage`` (planned hours of each stage), ``total``,
    ``final_branch`` (the final stage as planned) and ``gate_counterfactual``
    (each gate's candidates continued through the final stage instead).
    """
    def count(spec, gate_name=None) -> int:
        if spec == "matrix":
            return matrix_size
        g = parent_gate(spec)
        if g is not None:
            if g not in rules:
                raise AuditError(f"no rules for gate {g!r}", hint="every gate needs [gates.rules]")
            return int(rules[g]["promote"]["top_k"])
        return len(spec)

    label, cells, seconds = _branch(protocol)
    final = protocol.stages[-1]
    out = []
    total = 0.0
    for s in protocol.stages:
        n = count(s.candidates)
        h = _hours(n, stage_cells(s), budget_seconds(s))
        total += h or 0.0
        out.append({"item": "stage", "stage": s.stage, "gate": None, "candidates": n, "cells": stage_cells(s),
                    "budget_seconds": budget_seconds(s), "gpu_hours": h})
    out.append({"item": "total", "stage": None, "gate": None, "candidates": None, "cells": None,
                "budget_seconds": None, "gpu_hours": total})
    n = count(final.candidates)
    out.append({"item": "final_branch", "stage": label, "gate": None, "candidates": n, "cells": cells,
                "budget_seconds": seconds, "gpu_hours": _hours(n, cells, seconds)})
    for g in protocol.gates:
        n = count(rules[g.gate]["inputs"]["candidates"])
        out.append({"item": "gate_counterfactual", "stage": label, "gate": g.gate, "candidates": n,
                    "cells": cells, "budget_seconds": seconds, "gpu_hours": _hours(n, cells, seconds)})
    return out


BUDGET_COLUMNS = ("item", "stage", "gate", "candidates", "cells", "budget_seconds", "gpu_hours")


def budget_table(p: TableSource) -> list[Table]:
    df = p.rows
    rows = []
    total = 0.0
    for s in p.protocol.stages:
        sub = df[df["stage"] == s.stage]
        hours = math.fsum(sub["train_s"].tolist()) / 3600.0
        total += hours
        rows.append(("stage", s.stage, None, int(sub["config_id"].nunique()),
                     int(len(sub[["host", "seed"]].drop_duplicates())), budget_seconds(s), hours))
    rows.append(("total", None, None, None, None, None, total))
    label, cells, seconds = _branch(p.protocol)
    fsub = df[df["stage"].isin([s.stage for s in final_branch(p.protocol)])]
    n = int(fsub["config_id"].nunique())
    rows.append(("final_branch", label, None, n, cells, seconds, _hours(n, cells, seconds)))
    for g in p.protocol.gates:
        d = p.decisions.get(g.gate)
        if d is None:
            continue
        n = len(d["candidates"])
        rows.append(("gate_counterfactual", label, g.gate, n, cells, seconds, _hours(n, cells, seconds)))
    return [Table("budget_counterfactual", TableKind.BUDGET_COUNTERFACTUAL.value, BUDGET_COLUMNS, tuple(rows),
                  tuple(p.run_csvs + p.decision_paths + ["protocol.json"]), {"gpu_hours": 6, "budget_seconds": 1})]
