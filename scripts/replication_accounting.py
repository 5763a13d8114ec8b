"""Compute accounting of a study package in the unit of its hardware (CPU-hours here):
planned (the budgets, in steps) beside measured (CPU time), training apart from the rest,
and the paper's two counterfactual continuations priced at each candidate's own measured
cost per step.

    python scripts/replication_accounting.py ancillary [--json]

Measured CPU-hours = seconds x the host's threads / 3600, from the run rows:
`training_seconds` (the optimizer steps) and `total_seconds - training_seconds` (start-up,
data, evaluation and checkpoint writing: the run rows carry no separate evaluation time).
A counterfactual (continuing every candidate a gate saw through the final branch) is priced
with each candidate's training seconds per step at the latest stage it ran, times the final
stage's steps and cells; the unrun part is an estimate, not a measurement.  Reads the rows
with auditkit's package reader; writes nothing.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path


def accounting(pkg: Path) -> dict:
    from auditkit.package.rows import read_csv_text
    from auditkit.package.protocol import protocol_from_dict

    proto = protocol_from_dict(json.loads((pkg / "protocol.json").read_text("utf-8")), "protocol.json")
    threads = {}
    readme = (pkg / "README.txt").read_text("utf-8") if (pkg / "README.txt").is_file() else ""
    for line in readme.splitlines():  # "  windows: {"device": "cpu", "threads": 1, ...}"
        name, _, rest = line.strip().partition(": ")
        if name in proto.hosts and rest.startswith("{"):
            threads[name] = int(json.loads(rest).get("threads", 1))
    rows_by_stage = {}
    for s in proto.stages:
        rows = []
        for h in s.hosts:
            p = pkg / f"remote-results/{h}_{s.stage}_summary.csv"
            if p.is_file():
                rows += read_csv_text(p.read_text("utf-8"), str(p))[1]
        rows_by_stage[s.stage] = rows
    stages, per_step = [], {}
    tot_train = tot_other = 0.0
    for s in proto.stages:
        rows = rows_by_stage[s.stage]
        train = sum(float(r["training_seconds"]) * threads.get(r["host"], 1) for r in rows) / 3600
        other = sum((float(r["total_seconds"]) - float(r["training_seconds"])) * threads.get(r["host"], 1)
                    for r in rows) / 3600
        tot_train += train
        tot_other += other
        steps = int(float(s.budget.value)) if s.budget.kind == "steps" else None
        stages.append({"stage": s.stage, "budget": s.budget.label(), "cells": len(rows),
                       "planned_steps": steps * len(rows) if steps else None,
                       "measured_steps": sum(int(r["num_steps"]) for r in rows),
                       "training_cpu_hours": round(train, 4), "other_cpu_hours": round(other, 4)})
        by_cand = defaultdict(list)
        for r in rows:
            if int(r["num_steps"]) > 0:
                by_cand[r["config_id"]].append(float(r["training_seconds"]) * threads.get(r["host"], 1)
                                               / int(r["num_steps"]))
        for c, v in by_cand.items():
            per_step[c] = sum(v) / len(v)   # later stages overwrite: the latest stage a candidate ran
    final = proto.stages[-1]
    branch = [s for s in proto.stages if s.candidates == final.candidates]
    branch_cells = sum(len(s.hosts) * len(s.seeds) for s in branch)
    final_steps = float(final.budget.value) if final.budget.kind == "steps" else None
    executed = sum(st["training_cpu_hours"] for st in stages if st["stage"] in {s.stage for s in branch})
    counter = []
    for g in proto.gates:
        dpath = pkg / f"analysis/{g.gate}_decision.json"
        if not dpath.is_file() or final_steps is None:
            continue
        cands = [c["config_id"] for c in json.loads(dpath.read_text("utf-8"))["candidates"]]
        est = sum(per_step.get(c, 0.0) for c in cands) * final_steps * branch_cells / 3600
        counter.append({"gate": g.gate, "candidates": len(cands), "estimated_training_cpu_hours": round(est, 4),
                        "x_executed_final_branch": round(est / executed, 2) if executed else None})
    return {"unit": "cpu_hours", "stages": stages,
            "total": {"training_cpu_hours": round(tot_train, 4), "other_cpu_hours": round(tot_other, 4)},
            "final_branch": {"stages": [s.stage for s in branch], "cells_per_candidate": branch_cells,
                             "training_cpu_hours": round(executed, 4),
                             "share_of_training": round(executed / tot_train, 3) if tot_train else None},
            "counterfactuals": counter}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("package", type=Path)
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    doc = accounting(a.package)
    if a.json:
        print(json.dumps(doc, indent=2))
        return 0
    print("| stage | budget | cells | planned steps | measured steps | training CPU-h | other CPU-h |")
    print("|---|---|---|---|---|---|---|")
    for s in doc["stages"]:
        print(f"| {s['stage']} | {s['budget']} | {s['cells']} | {s['planned_steps']} | {s['measured_steps']} | "
              f"{s['training_cpu_hours']:.4f} | {s['other_cpu_hours']:.4f} |")
    t = doc["total"]
    print(f"| total | | | | | {t['training_cpu_hours']:.4f} | {t['other_cpu_hours']:.4f} |")
    fb = doc["final_branch"]
    print(f"\nexecuted final branch: {fb['training_cpu_hours']:.4f} training CPU-h "
          f"({100 * (fb['share_of_training'] or 0):.1f}% of all training)")
    for c in doc["counterfactuals"]:
        print(f"continuing all {c['candidates']} candidates of gate {c['gate']} through the final branch: "
              f"~{c['estimated_training_cpu_hours']:.4f} training CPU-h ({c['x_executed_final_branch']}x the executed)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
