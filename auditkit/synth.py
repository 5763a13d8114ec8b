"""Synthetic packages for tests and benchmarks: deterministic, any size, no training.

    python -m auditkit.synth OUT_DIR --configs 12 --hosts 2 --seeds 2

`make_package(root, ...)` writes a complete package (protocol.json, matrix,
frozen rules, run CSVs with deterministic fake val_bpb, decisions decided by
`replay.decide_gate`, optionally tables, and the MANIFEST) shaped like the
paper's protocol: a smoke stage, a screening stage over the whole matrix, a
confirmation stage over the screen's promoted list, and a final stage.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np

from auditkit.rows import RUN_COLUMNS, run_csv_path

EPOCH = datetime(2026, 4, 27, 9, 0, 0, tzinfo=timezone.utc)
FROZEN_AT = "2026-04-27T08:00:00Z"
DECIDED_AT = "2026-05-02T12:00:00Z"
RUNNER_SHA = "a" * 64


@dataclass(frozen=True)
class SynthShape:
    configs: int = 12
    hosts: int = 2
    seeds: int = 2           # per stage (the smoke stage runs one)
    screen_top_k: int = 4
    confirm_top_k: int = 3
    seed: int = 0            # of the fake val_bpb generator

    def rows(self) -> int:
        """Run rows the package will hold."""
        h, s = self.hosts, self.seeds
        return (self.configs * h + self.configs * h * s + self.screen_top_k * h * s
                + self.confirm_top_k * h * s)


STAGES = (("stage0_smoke", 120, "matrix"), ("screen", 600, "matrix"),
          ("confirm", 3600, "promoted-by:screen"), ("final", 43200, "promoted-by:confirm"))


def config_ids(n: int) -> list[str]:
    named = ["bridge", "greedy", "d8_ar48"]
    return named[:n] + [f"c{i:05d}" for i in range(max(0, n - len(named)))]


def host_names(n: int) -> list[str]:
    return ["linux", "windows"][:n] if n <= 2 else [f"host-{i:02d}" for i in range(n)]


def _protocol(shape: SynthShape) -> dict:
    hosts = host_names(shape.hosts)
    stages = []
    for i, (name, seconds, cands) in enumerate(STAGES):
        seeds = [1] if i == 0 else [100 * i + j for j in range(shape.seeds)]
        stages.append({"stage": name, "budget": {"kind": "seconds", "value": seconds}, "seeds": seeds,
                       "hosts": hosts, "candidates": cands})
    gates = [{"gate": g, "rules": f"preanalysis/{g}.rules.json"} for g in ("screen", "confirm", "final")]
    return {"schema": "auditkit/protocol/v1", "name": f"synthetic-{shape.configs}x{shape.hosts}x{shape.seeds}",
            "matrix": "matrices/synthetic.csv", "hosts": hosts, "stages": stages, "gates": gates}


def _rules(shape: SynthShape, proto: dict) -> dict[str, dict]:
    st = {s["stage"]: s for s in proto["stages"]}
    ids = config_ids(shape.configs)

    def body(gate, stage, cands, top_k, keep, checks):
        return {"schema": "auditkit/rules/v1", "gate": gate, "frozen_at": FROZEN_AT,
                "inputs": {"stages": [stage], "hosts": proto["hosts"], "seeds": st[stage]["seeds"],
                           "candidates": cands},
                "metric": {"column": "val_bpb", "better": "lower"},
                "promote": {"top_k": top_k, "always_keep": keep}, "checks": checks}

    ref = ids[0]
    checks = []
    if len(ids) >= 3:
        checks = [{"kind": "near_equivalence", "candidate": ids[1], "reference": ref, "threshold": 0.010},
                  {"kind": "mean_gap", "candidate": ids[2], "reference": ref, "threshold": 0.020}]
    checks.append({"kind": "ranks_first_in_all_cells", "candidate": ref})
    return {
        "screen": body("screen", "screen", "matrix", shape.screen_top_k, [ref], checks[:-1]),
        "confirm": body("confirm", "confirm", "promoted-by:screen", shape.confirm_top_k, [ref], checks),
        "final": body("final", "final", "promoted-by:confirm", 1, [], [checks[-1]]),
    }


def fake_val_bpb(shape: SynthShape, stage_index: int, configs: list[str], host: int, seeds: list[int]) -> np.ndarray:
    """val_bpb[config, seed]: a per-config quality, a per-host offset and seed noise, 6 decimals."""
    ids = config_ids(shape.configs)
    rng = np.random.default_rng([shape.seed, 7])
    quality = rng.uniform(0.0, 0.08, size=len(ids))
    quality[:3] = [0.0, 0.012, 0.026][:min(3, len(ids))]
    where = {c: i for i, c in enumerate(ids)}
    q = quality[[where[c] for c in configs]]
    noise = np.random.default_rng([shape.seed, stage_index, host]).normal(0.0, 0.002, size=(len(configs), len(seeds)))
    base = 1.60 - 0.05 * stage_index + 0.003 * host
    return np.round(base + q[:, None] + noise, 6)


def _write_rows(root: Path, shape: SynthShape, stage_index: int, stage: dict, configs: list[str],
                clock: list[int]) -> None:
    hosts = stage["hosts"]
    seeds = stage["seeds"]
    seconds = stage["budget"]["value"]
    for hi, host in enumerate(hosts):
        vals = fake_val_bpb(shape, stage_index, configs, hi, seeds)
        lines = [",".join(RUN_COLUMNS)]
        for ci, cid in enumerate(configs):
            for si, seed in enumerate(seeds):
                start = EPOCH + timedelta(seconds=clock[0])
                clock[0] += 1
                end = start + timedelta(seconds=seconds)
                rid = f"{host}-{stage['stage']}-{cid}-s{seed}"
                lines.append(",".join((
                    rid, host, stage["stage"], str(seed), cid, "seconds", str(seconds), "ok",
                    f"{vals[ci, si]:.6f}", f"{seconds:.1f}", f"{seconds + 30:.1f}", "1000", "65.5", "50.3",
                    "20480.0", "40.0", start.strftime("%Y-%m-%dT%H:%M:%SZ"), end.strftime("%Y-%m-%dT%H:%M:%SZ"),
                    RUNNER_SHA, "", "")))
        path = root / run_csv_path(host, stage["stage"])
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(lines) + "\n", encoding="utf-8", newline="\n")


def make_package(root: str | Path, shape: SynthShape = SynthShape(), *, tables: bool = True,
                 manifest: bool = True) -> Path:
    """Write a complete synthetic package at `root` (created; must not hold one already)."""
    from auditkit.manifest import build_manifest
    from auditkit.replay import decide_gate, decision_text

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    proto = _protocol(shape)
    (root / "protocol.json").write_text(json.dumps(proto, indent=2) + "\n", encoding="utf-8")
    ids = config_ids(shape.configs)
    roles = {0: "reference", 1: "greedy", 2: "sentinel"}
    mpath = root / proto["matrix"]
    mpath.parent.mkdir(parents=True, exist_ok=True)
    mpath.write_text("config_id,role,depth\n" + "".join(f"{c},{roles.get(i, 'screened')},{4 + i % 5}\n"
                                                         for i, c in enumerate(ids)), encoding="utf-8")
    rules = _rules(shape, proto)
    for gate, doc in rules.items():
        p = root / f"preanalysis/{gate}.rules.json"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    clock = [0]
    promoted = {"matrix": ids}
    for i, stage in enumerate(proto["stages"]):
        cands = promoted[stage["candidates"]]
        _write_rows(root, shape, i, stage, cands, clock)
        if stage["stage"] in rules:
            doc = decide_gate(root, stage["stage"], DECIDED_AT)
            out = root / f"analysis/{stage['stage']}_decision.json"
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(decision_text(doc), encoding="utf-8", newline="\n")
            promoted[f"promoted-by:{stage['stage']}"] = doc["promoted"]
    (root / "README.txt").write_text(f"Synthetic package {proto['name']} (auditkit.synth).\n", encoding="utf-8")
    if tables:
        from auditkit.tables import generate_tables

        generate_tables(root)
    if manifest:
        build_manifest(root)
    return root


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("--configs", type=int, default=12)
    ap.add_argument("--hosts", type=int, default=2)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--no-tables", action="store_true")
    a = ap.parse_args(argv)
    shape = SynthShape(configs=a.configs, hosts=a.hosts, seeds=a.seeds)
    make_package(a.out, shape, tables=not a.no_tables)
    print(f"wrote {a.out}: {shape.rows()} run rows")


if __name__ == "__main__":
    main()
