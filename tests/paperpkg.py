"""A package shaped like Paper A's protocol (manifests/paper06.toml), written in well under a second.

Twelve configurations, hosts windows and linux, the smoke stage, 5- and 10-minute
screens, the top 9 at a second seed, four candidates at 60 minutes (two seeds) and
three anchors at 12 hours (two seeds), every gate decided by the engine from the raw
rows. The val_bpb values are made up so that the paper's findings hold
(../shared/PAPER.md): short-budget rankings differ between the hosts; greedy is the
mean-best at the replicated 10-minute gate but bridge wins at 60 minutes and 12 hours
in every host-seed cell; greedy misses the 0.010 near-equivalence rule and d8_ar48 the
0.020 mean-gap rule; every run trains for exactly its budget, so the accounting is the
paper's (144, 169.2, 192, 432 GPU-hours).

    build_paper_package(root, edit=None, figures=False) -> root

`edit(stage, host, seed, config_id, value) -> value` changes values before anything is
decided (a raw-row edit as the study would have recorded it).
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

from auditkit.manifest import build_manifest
from auditkit.protocol import load_manifest
from auditkit.replay import decide_gate, decision_text
from auditkit.rows import RUN_COLUMNS, run_csv_path, write_csv_text

REPO = Path(__file__).resolve().parents[1]
MANIFEST = REPO / "manifests" / "paper06.toml"
EPOCH = datetime(2026, 4, 27, 9, 0, 0, tzinfo=timezone.utc)
DECIDED_AT = "2026-05-02T12:00:00Z"

BASE = {120: 1.60, 300: 1.40, 600: 1.30, 3600: 1.10, 43200: 0.95}
# short budgets (<= 10 min): greedy best, and the hosts disagree on the order of the rest
SHORT = {"greedy": 0.000, "d8_ar48": 0.004, "s01_d8_ar64": 0.006, "bridge": 0.008, "s02_d10_ar48": 0.012,
         "s03_d10_ar64_b262k": 0.015, "s04_d12_ar48": 0.018, "s05_d10_ar64_lr03": 0.021,
         "s06_d10_ar64_wd07": 0.024, "s07_d8_ar64_b262k": 0.027, "s08_d10_ar64_L": 0.030,
         "s09_d12_ar64_b262k": 0.033}
LINUX_SHORT = {"s02_d10_ar48": 0.018, "s03_d10_ar64_b262k": -0.010, "s04_d12_ar48": 0.012,
               "s05_d10_ar64_lr03": -0.015, "s06_d10_ar64_wd07": -0.004, "s07_d8_ar64_b262k": -0.020,
               "s08_d10_ar64_L": -0.012, "s09_d12_ar64_b262k": -0.030, "d8_ar48": 0.003}
# long budgets (60 min, 12 h): bridge first everywhere, greedy 0.014 behind, d8_ar48 0.027
LONG = {"bridge": 0.000, "greedy": 0.014, "d8_ar48": 0.027, "s01_d8_ar64": 0.035}


def noise(stage: str, host: str, seed: int, cid: str) -> float:
    """Deterministic seed noise in [-0.0015, 0.0015]."""
    h = hashlib.sha256(f"{stage}|{host}|{seed}|{cid}".encode()).digest()
    return (int.from_bytes(h[:4], "big") / 2**32 - 0.5) * 0.003


def val_bpb(stage: str, budget: int, host: str, seed: int, cid: str) -> float:
    if budget <= 600:
        q = SHORT[cid] + (LINUX_SHORT.get(cid, 0.0) if host == "linux" else 0.0)
    else:
        q = LONG.get(cid, 0.05)
    return BASE[budget] + q + noise(stage, host, seed, cid) + (0.02 if host == "linux" else 0.0)


def build_paper_package(root: str | Path, *, edit=None, figures: bool = False, se: float | None = None) -> Path:
    """Write the paper-shaped package at `root`; `se` adds a `val_bpb_se` column of that value."""
    root = Path(root)
    m = load_manifest(MANIFEST)
    proto = m.protocol
    for d in ("matrices", "preanalysis", "remote-results", "analysis"):
        (root / d).mkdir(parents=True, exist_ok=True)
    (root / "protocol.json").write_text(json.dumps(proto.to_json(), indent=2) + "\n")
    matrix = m.matrix_file.read_text()
    (root / proto.matrix).write_text(matrix)
    ids = [line.split(",")[0] for line in matrix.splitlines()[1:]]
    for g in proto.gates:
        doc = {"schema": "auditkit/rules/v1", "gate": g.gate, "frozen_at": "2026-04-27T08:00:00Z", **m.rules[g.gate]}
        (root / g.rules).write_text(json.dumps(doc, indent=2) + "\n")
    columns = list(RUN_COLUMNS) + (["val_bpb_se"] if se is not None else [])
    promoted: dict[str, list[str]] = {}
    written: set[str] = set()
    clock = 0
    for stage in proto.stages:
        if stage.candidates == "matrix":
            cands = ids
        elif stage.promoted_by:
            cands = promoted[stage.promoted_by]
        else:
            cands = list(stage.candidates)
        budget = int(stage.budget.value)
        for host in stage.hosts:
            rows = []
            for cid in cands:
                for seed in stage.seeds:
                    v = val_bpb(stage.stage, budget, host, seed, cid)
                    if edit is not None:
                        v = edit(stage.stage, host, seed, cid, v)
                    start = EPOCH + timedelta(seconds=clock)
                    clock += 1
                    row = {"run_id": f"{host}-{stage.stage}-{cid}-s{seed}", "host": host, "stage": stage.stage,
                           "seed": str(seed), "config_id": cid, "budget_kind": "seconds",
                           "budget_value": str(budget), "status": "ok", "val_bpb": f"{v:.6f}",
                           "training_seconds": f"{budget:.3f}", "total_seconds": f"{budget + 30:.3f}",
                           "num_steps": "1000", "total_tokens_M": "65.5", "num_params_M": "50.3",
                           "peak_vram_mb": "20480.0", "mfu_percent": "40.0",
                           "started_at": start.strftime("%Y-%m-%dT%H:%M:%SZ"),
                           "finished_at": (start + timedelta(seconds=budget)).strftime("%Y-%m-%dT%H:%M:%SZ"),
                           "runner_sha256": "a" * 64, "checkpoint": "", "checkpoint_sha256": ""}
                    if se is not None:
                        row["val_bpb_se"] = f"{se:.6f}"
                    rows.append(row)
            (root / run_csv_path(host, stage.stage)).write_text(write_csv_text(columns, rows))
        written.add(stage.stage)
        for g in proto.gates:
            ins = m.rules[g.gate]["inputs"]["stages"]
            if g.gate not in promoted and all(s in written for s in ins):
                doc = decide_gate(root, g.gate, DECIDED_AT)
                (root / g.decision_path).write_text(decision_text(doc))
                promoted[g.gate] = doc["promoted"]
    (root / "README.txt").write_text("A package shaped like Paper A's protocol (tests/paperpkg.py).\n"
                                     "Host profiles:\n  windows: {\"device\": \"cuda\", \"gpu\": \"A100\"}\n"
                                     "  linux: {\"device\": \"cuda\", \"gpu\": \"L40S\"}\n")
    from auditkit.tables import generate_tables

    generate_tables(root)
    if figures:
        from auditkit.figures import generate_figures

        generate_figures(root)
    build_manifest(root)
    return root
