"""What a finished study's own raw rows show (`observations_from_study`), written by `protocol run`
to `observations.json` in the claims format: each gate check's outcome, the final winner, the
compute accounting and the host correlations. They hold on the package they were read from by
construction and are evidence of nothing; `claims.json` holds what authors or reviewers claim and
`auditkit.report.claims` decides it."""

from __future__ import annotations

import json
import math
from pathlib import Path

from auditkit.derived.package_data import decide_gates
from auditkit.derived.tables import build_tables

OBSERVATIONS_FILE = "observations.json"


def claims_text(doc: dict) -> str:
    """The canonical bytes of a claims document (2-space indent, `\\n` at the end)."""
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"


def observations_from_study(package_dir: str | Path) -> dict:
    """What a finished study's own raw rows show, whatever it is, in the claims format: each gate
    check's outcome, the final winner's rank and whether it was the mean-best at every earlier gate,
    the compute accounting, and the host correlations at every stage run on two or more hosts.
    These are *observations*: each holds on the package it was read from by construction and is
    evidence of nothing (`protocol run` writes them to observations.json; claims.json holds what
    authors or reviewers claim). Raises AuditError when the package cannot be read."""
    pkg = Path(package_dir)
    gates = decide_gates(pkg)
    claims: list[dict] = []
    decided = [o for o in gates.values() if o.decided]

    for o in decided:
        for ch in o.decision.checks:
            outcome = "PASS" if ch.passed else "FAIL"
            ref = f" against {ch.reference}" if ch.reference else ""
            if ch.kind == "ranks_first_in_all_cells":
                n = len(o.decision.cells)
                won = "-" if ch.value is None else int(ch.value)
                text = (f"At gate {o.gate}, {ch.candidate} ranks first in all {n} host-seed cells." if ch.passed else
                        f"At gate {o.gate}, {ch.candidate} does not rank first in all {n} host-seed cells "
                        f"({won} of {n}).")
            else:
                text = (f"At gate {o.gate}, {ch.candidate}{ref} {'meets' if ch.passed else 'does not meet'} the "
                        f"frozen {ch.kind.replace('_', '-')} rule (threshold {ch.threshold:g} {o.rules['metric']['column']}).")
            check = {"kind": "gate_check", "gate": o.gate, "check": ch.kind, "candidate": ch.candidate,
                     "expected": outcome}
            if ch.reference:
                check["reference"] = ch.reference
            claims.append({"id": f"{o.gate}-{ch.kind}-{ch.candidate}".replace("_", "-"), "statement": text,
                           "check": check})

    if decided:
        final = decided[-1]
        winner = next((c for c in final.decision.candidates if c.eligible and c.rank == 1), None)
        if winner is not None:
            n = len(final.decision.cells)
            wins = winner.wins
            scope = "every_cell" if wins == n else ("no_cell" if wins == 0 else None)
            claims.append({"id": f"{final.gate}-winner", "statement": f"{winner.config_id} has the best mean "
                           f"{final.rules['metric']['column']} at the final gate {final.gate}.",
                           "check": {"kind": "rank", "gate": final.gate, "candidate": winner.config_id, "rank": 1,
                                     "scope": "overall"}})
            if scope:
                claims.append({"id": f"{final.gate}-winner-cells", "statement":
                               f"At gate {final.gate}, {winner.config_id} ranks first in "
                               f"{'every one' if scope == 'every_cell' else 'none'} of the {n} host-seed cells.",
                               "check": {"kind": "rank", "gate": final.gate, "candidate": winner.config_id,
                                         "rank": 1, "scope": scope}})
            for o in decided[:-1]:
                res = o.decision.candidate(winner.config_id)
                if res is None:
                    continue
                best = res.eligible and res.rank == 1
                claims.append({"id": f"winner-mean-best-at-{o.gate}".replace("_", "-"), "statement":
                               f"The final winner ({winner.config_id}) {'is' if best else 'is not'} the mean-best "
                               f"candidate at gate {o.gate}.",
                               "check": {"kind": "promotion", "gate": o.gate, "candidate": {"winner_of": final.gate},
                                         "fact": "mean_best", "expected": best}})

    tables = {t.id: t for t in build_tables(pkg)}
    budget = tables.get("budget_counterfactual")
    if budget is not None:
        cols = budget.columns
        for r in budget.rows:
            row = dict(zip(cols, r))
            if row["gpu_hours"] is None or row["item"] not in ("total", "final_branch", "gate_counterfactual"):
                continue
            key = {"item": row["item"]} if row["item"] != "gate_counterfactual" else \
                {"item": row["item"], "gate": row["gate"]}
            what = {"total": "The whole staged protocol spends",
                    "final_branch": "The executed final branch spends",
                    "gate_counterfactual": f"Continuing all candidates of gate {row['gate']} through the final "
                                           f"stage would spend"}[row["item"]]
            value = round(row["gpu_hours"], 6)
            claims.append({"id": ("gpu-hours-" + "-".join(str(v) for v in key.values())).replace("_", "-"),
                           "statement": f"{what} {value:g} GPU-hours of training.",
                           "check": {"kind": "table_value", "table": "budget_counterfactual", "row": key,
                                     "column": "gpu_hours", "value": value, "tol": 1e-6}})

    corr = tables.get("host_correlation")
    if corr is not None:
        for r in corr.rows:
            row = dict(zip(corr.columns, r))
            if row["spearman"] is None:
                continue
            v = row["spearman"]
            lo, hi = math.floor(v * 1000 - 1e-9) / 1000, math.ceil(v * 1000 + 1e-9) / 1000
            claims.append({"id": f"host-spearman-{row['stage']}-{row['host_a']}-{row['host_b']}".replace("_", "-"),
                           "statement": f"At stage {row['stage']}, the candidates' rankings on {row['host_a']} and "
                                        f"{row['host_b']} have Spearman correlation {v:.3f}.",
                           "check": {"kind": "host_sensitivity", "stage": row["stage"],
                                     "hosts": [row["host_a"], row["host_b"]], "statistic": "spearman",
                                     "at_least": lo, "at_most": hi}})
    seen: dict[str, int] = {}
    for c in claims:  # ids are unique: a second check of the same kind and candidate gets a suffix
        n = seen.get(c["id"], 0)
        seen[c["id"]] = n + 1
        if n:
            c["id"] = f"{c['id']}-{n + 1}"
    from auditkit.package.store import open_package

    proto = open_package(pkg).read_json("protocol.json")
    name = proto.get("name", pkg.name) if isinstance(proto, dict) else pkg.name
    return {"schema": "auditkit/claims/v1",
            "source": f"study {name}: observations read from its own raw rows (they hold by construction and are "
                      "evidence of nothing; claims.json holds what authors or reviewers claim)",
            "claims": claims}


claims_from_study = observations_from_study   # the name packages before observations.json knew
