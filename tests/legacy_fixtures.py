"""A legacy-shaped ancillary package: the arXiv listing's file names (shared/PAPER.md), in the
authors' own shapes, written in milliseconds. No auditkit code writes any of it.

- `MANIFEST.csv` (`relative_path,size_bytes,sha256`) and `MANIFEST.json` (`{"files": [...]}`);
- prose pre-registrations under `preanalysis/*.txt`;
- per-host run CSVs `remote-results/{linux,windows}_<stage>_summary.csv` with autoresearch's
  summary columns under other names, budgets and training time in minutes, local times with a
  UTC offset, the authors' status words (`completed`, `crashed`) and host labels
  (`win-a100`, `linux-l40s`);
- the authors' ad-hoc decisions (`analysis/*decision*.json|csv`, a per-cell CSV, a summary CSV)
  and tables (`analysis/p06_*.csv`), a matrix with `condition` for config_id.

The decisions are computed here by a plain re-implementation of the promotion rule (mean
over cells, ties by name), independent of `auditkit.rules`, so a replay that agrees with
them agrees with a second implementation.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import random
from datetime import datetime, timedelta, timezone
from pathlib import Path

HOSTS = {"windows": ("win-a100", timezone(timedelta(hours=2))),
         "linux": ("linux-l40s", timezone(timedelta(hours=-4)))}
BUDGET_MIN = {"stage0": 2, "stage1_5min": 5, "stage1_10min": 10, "stage1_10min_seed43_top9": 10,
              "stage2_60min_seed44_gate4": 60, "stage2_60min_seed45_gate4": 60,
              "stage3_12h_seed46_anchor3": 720, "stage3b_12h_seed47_anchor3": 720}
STARTS = {"stage0": "2026-04-27T08:00", "stage1_5min": "2026-04-27T10:00", "stage1_10min": "2026-04-28T13:00",
          "stage1_10min_seed43_top9": "2026-04-28T18:00", "stage2_60min_seed44_gate4": "2026-04-28T21:00",
          "stage2_60min_seed45_gate4": "2026-04-29T03:00", "stage3_12h_seed46_anchor3": "2026-04-29T14:00",
          "stage3b_12h_seed47_anchor3": "2026-05-01T02:00"}
KEEP = ["bridge", "greedy", "d8_ar48"]
SCREENED = [f"s{i:02d}_d{4 + i % 3}_ar{32 + 8 * (i % 2)}" for i in range(1, 10)]
CONFIGS = KEEP + SCREENED
ROLES = {"bridge": "reference", "greedy": "greedy", "d8_ar48": "sentinel"}
# val_bpb at each budget (minutes): bridge wins long budgets, greedy short ones
CURVES = {"bridge": {2: 1.60, 5: 1.35, 10: 1.22, 60: 1.020, 720: 0.900},
          "greedy": {2: 1.55, 5: 1.30, 10: 1.18, 60: 1.030, 720: 0.915},
          "d8_ar48": {2: 1.58, 5: 1.33, 10: 1.21, 60: 1.040, 720: 0.925}}
RUNNER_SHA = "7" * 64
RUN_HEADER = ["run_name", "machine", "seed", "condition", "budget_min", "exit_status", "final_val_bpb", "train_min",
              "total_seconds", "peak_vram_mb", "mfu_percent", "total_tokens_M", "num_steps", "num_params_M", "depth",
              "start_local", "end_local", "runner_sha"]

PROSE = {
    "STAGE1_5MIN_ANALYSIS_2026-04-27.txt":
        "Stage 1, 5-minute screen: analysis and plan (2026-04-27)\n\nThe 5-minute rankings differ between the "
        "Windows A100 and the Linux L40S hosts.\nPre-registered rule for the 10-minute top-9 selection: run all twelve "
        "conditions for 10 minutes at seed 42 on both hosts; rank by mean val_bpb over the two host cells (lower is "
        "better, ties by name); always keep bridge, greedy and d8_ar48; fill up to nine; these nine get seed 43.\n",
    "PREANALYSIS_STAGE1_SEED43_TO_60MIN_2026-04-28.txt":
        "Pre-registration: replicated 10-minute gate (seeds 42 and 43) to 60 minutes.\n\nCandidates: the nine "
        "conditions selected at seed 42. Cells: both hosts x seeds 42, 43. Rank by mean val_bpb over the four cells "
        "(lower is better). Keep bridge, greedy and d8_ar48; promote four conditions in all (gate4).\n",
    "PREANALYSIS_STAGE2_60MIN_SEED44_2026-04-28.txt":
        "Pre-registration: 60-minute gate, seed 44 then seed 45.\n\nCandidates: the gate4 conditions. Cells: both "
        "hosts x seeds 44, 45. Rank by mean val_bpb (lower is better); keep the bridge reference; promote three "
        "anchors to 12 hours. Record whether the bridge ranks first in every cell.\n",
    "PREANALYSIS_STAGE3_12H_SEED46_2026-04-29.txt":
        "Pre-registration: 12-hour package, seed 46.\n\nCandidates: the three anchors. Cells: both hosts, seed 46. "
        "The best mean val_bpb is the seed-46 winner.\n",
    "PREANALYSIS_STAGE3B_12H_SEED47_2026-04-30.txt":
        "Pre-registration: 12-hour package, seeds 46 and 47 combined.\n\nCandidates: the three anchors. Cells: both "
        "hosts x seeds 46, 47. The best mean val_bpb wins. Frozen checks: greedy is near-equivalent to the bridge "
        "iff |mean gap| <= 0.010 val_bpb; the d8/ar48 sentinel passes iff its mean gap to the bridge <= 0.020; "
        "record whether the bridge ranks first in all four host-seed cells.\n",
    "EXPERIMENT_DESIGN_DECISION_2026-04-28.txt":
        "Design decision: two host blocks, budgets of 2, 5, 10, 60 minutes and 12 hours, seeds per stage.\n",
    "STAGE2_60MIN_SEED44_DECISION_2026-04-28.txt": "Decision record: seed 44 finished; continue with seed 45.\n",
    "STAGE2_60MIN_SEED45_DECISION_2026-04-29.txt": "Decision record: the three anchors go to 12 hours.\n",
    "STAGE3_12H_SEED46_DECISION_2026-04-30.txt": "Decision record: seed 46 done; the bridge leads.\n",
    "STAGE3B_12H_SEED47_DECISION_2026-05-02.txt": "Decision record: the bridge wins the 12-hour package.\n",
}

# The gates in auditkit's rules form, as a reviewer transcribes them from the prose above.
RULES = {
    "stage1_top9": {"inputs": {"stages": ["stage1_10min"], "seeds": [42], "candidates": "matrix"},
                    "promote": {"top_k": 9, "always_keep": KEEP}},
    "stage1": {"inputs": {"stages": ["stage1_10min", "stage1_10min_seed43_top9"], "seeds": [42, 43],
                          "candidates": "promoted-by:stage1_top9"}, "promote": {"top_k": 4, "always_keep": KEEP}},
    "stage2": {"inputs": {"stages": ["stage2_60min_seed44_gate4", "stage2_60min_seed45_gate4"], "seeds": [44, 45],
                          "candidates": "promoted-by:stage1"}, "promote": {"top_k": 3, "always_keep": ["bridge"]},
               "checks": [{"kind": "ranks_first_in_all_cells", "candidate": "bridge"}]},
    "stage3": {"inputs": {"stages": ["stage3_12h_seed46_anchor3"], "seeds": [46], "candidates": "promoted-by:stage2"},
               "promote": {"top_k": 1}},
    "stage3b": {"inputs": {"stages": ["stage3_12h_seed46_anchor3", "stage3b_12h_seed47_anchor3"], "seeds": [46, 47],
                           "candidates": "promoted-by:stage2"}, "promote": {"top_k": 1},
                "checks": [{"kind": "near_equivalence", "candidate": "greedy", "reference": "bridge", "threshold": 0.010},
                           {"kind": "mean_gap", "candidate": "d8_ar48", "reference": "bridge", "threshold": 0.020},
                           {"kind": "ranks_first_in_all_cells", "candidate": "bridge"}]},
}
GATE_PROSE = {"stage1_top9": "preanalysis/STAGE1_5MIN_ANALYSIS_2026-04-27.txt",
              "stage1": "preanalysis/PREANALYSIS_STAGE1_SEED43_TO_60MIN_2026-04-28.txt",
              "stage2": "preanalysis/PREANALYSIS_STAGE2_60MIN_SEED44_2026-04-28.txt",
              "stage3": "preanalysis/PREANALYSIS_STAGE3_12H_SEED46_2026-04-29.txt",
              "stage3b": "preanalysis/PREANALYSIS_STAGE3B_12H_SEED47_2026-04-30.txt"}
SHARED_RULES = {"metric": {"column": "val_bpb", "better": "lower"}, "inputs": {"hosts": ["windows", "linux"]}}
MANIFESTS = ("MANIFEST.csv", "MANIFEST.json")


def full_rules(gate: str) -> dict:
    """A gate's rules merged with the shared ones (what a draft needs filled in)."""
    r = json.loads(json.dumps(RULES[gate]))
    r["inputs"] = {**SHARED_RULES["inputs"], **r["inputs"]}
    r["metric"] = dict(SHARED_RULES["metric"])
    r.setdefault("checks", [])
    return r


def _curve(cid: str, minutes: int, rng: random.Random) -> float:
    if cid in CURVES:
        return CURVES[cid][minutes]
    i = SCREENED.index(cid)
    short = {2: 1.62, 5: 1.31 + 0.012 * i, 10: 1.19 + 0.01 * i, 60: 1.07 + 0.004 * i, 720: 0.95}
    return short[minutes]


def _value(cid: str, stage: str, host: str, seed: int) -> float:
    minutes = BUDGET_MIN[stage]
    rng = random.Random(f"{cid}|{host}|{minutes}")
    inter = rng.uniform(-0.015, 0.015) if minutes <= 10 else rng.uniform(-0.002, 0.002)
    noise = random.Random(f"{cid}|{host}|{stage}|{seed}").uniform(-0.002, 0.002)
    offset = -0.01 if host == "windows" else 0.0
    return round(_curve(cid, minutes, rng) + inter + noise + offset, 6)


def _decide(values: dict[tuple[str, str, int], float], candidates: list[str], top_k: int, keep: list[str]):
    """The authors' rule, re-implemented plainly: mean over cells, ranked ascending, ties by name."""
    cells = sorted({(h, s) for (_, h, s) in values})
    means = {c: math.fsum(values[(c, h, s)] for h, s in cells) / len(cells) for c in candidates}
    order = sorted(candidates, key=lambda c: (means[c], c))
    chosen = [c for c in keep if c in candidates]
    for c in order:
        if len(chosen) >= top_k:
            break
        if c not in chosen:
            chosen.append(c)
    promoted = [c for c in order if c in chosen]
    cell_rank = {}
    for h, s in cells:
        for r, c in enumerate(sorted(candidates, key=lambda c: (values[(c, h, s)], c)), 1):
            cell_rank[(c, h, s)] = r
    return order, means, promoted, cells, cell_rank


def _csv_text(header, rows) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue()


def build_legacy_package(root: str | Path) -> Path:
    """Write the package under `root` (created); return `root`."""
    root = Path(root)
    files: dict[str, str] = {}
    files["README.txt"] = "Paper 06 ancillary package.\nSee MANIFEST.csv for hashes.\n"
    files["matrices/paper06_starter_matrix_2026-04-27.csv"] = _csv_text(
        ["condition", "role", "depth", "aspect_ratio", "total_batch_size"],
        [[c, ROLES.get(c, "screened"), 8 if c == "d8_ar48" else 4 + i % 3, 48 if c == "d8_ar48" else 32, 2 ** 19]
         for i, c in enumerate(CONFIGS)])
    for name, text in PROSE.items():
        files[f"preanalysis/{name}"] = text

    runs: dict[str, dict[str, list]] = {}
    values: dict[str, dict] = {}

    def run_stage(stage: str, seeds: list[int], configs: list[str], crash: tuple | None = None):
        minutes = BUDGET_MIN[stage]
        values[stage] = {}
        for host, (label, tz) in HOSTS.items():
            rows = []
            t = datetime.fromisoformat(STARTS[stage]).replace(tzinfo=timezone.utc)
            for seed in seeds:
                for cid in configs:
                    v = _value(cid, stage, host, seed)
                    crashed = crash == (host, cid)
                    end = t + timedelta(minutes=minutes, seconds=40)
                    rows.append([f"p06-{label}-{stage}-{cid}-s{seed}", label, seed, cid, minutes,
                                 "crashed" if crashed else "completed", "" if crashed else f"{v:.6f}",
                                 f"{minutes:.2f}", f"{minutes * 60 + 40:.1f}", "40960.0", "38.5", "512.000000",
                                 minutes * 100, "50.331648", 8 if cid == "d8_ar48" else 4,
                                 t.astimezone(tz).isoformat(timespec="seconds"),
                                 end.astimezone(tz).isoformat(timespec="seconds"), RUNNER_SHA])
                    if not crashed:
                        values[stage][(cid, host, seed)] = v
                    t = end + timedelta(minutes=1)
            files[f"remote-results/{host}_{stage}_summary.csv"] = _csv_text(RUN_HEADER, rows)

    run_stage("stage0", [42], KEEP, crash=("linux", "d8_ar48"))
    run_stage("stage1_5min", [42], CONFIGS)
    run_stage("stage1_10min", [42], CONFIGS)
    _, _, top9, _, _ = _decide(values["stage1_10min"], CONFIGS, 9, KEEP)
    run_stage("stage1_10min_seed43_top9", [43], top9)
    both10 = {k: v for st in ("stage1_10min", "stage1_10min_seed43_top9") for k, v in values[st].items()
              if k[0] in top9}
    order1, means1, gate4, _, _ = _decide(both10, top9, 4, KEEP)
    run_stage("stage2_60min_seed44_gate4", [44], gate4)
    run_stage("stage2_60min_seed45_gate4", [45], gate4)
    v60 = {**values["stage2_60min_seed44_gate4"], **values["stage2_60min_seed45_gate4"]}
    order2, means2, anchors, cells2, rank2 = _decide(v60, gate4, 3, ["bridge"])
    run_stage("stage3_12h_seed46_anchor3", [46], anchors)
    run_stage("stage3b_12h_seed47_anchor3", [47], anchors)
    v12 = {**values["stage3_12h_seed46_anchor3"], **values["stage3b_12h_seed47_anchor3"]}
    order3, means3, winner, cells3, rank3 = _decide(v12, anchors, 1, [])

    files["analysis/stage1_10min_seed42_seed43_top9_promotion_decision.json"] = json.dumps({
        "gate": "replicated 10-minute gate", "rule": "preanalysis/PREANALYSIS_STAGE1_SEED43_TO_60MIN_2026-04-28.txt",
        "top9_from_seed42": top9,
        "ranking": [{"condition": c, "rank": i, "mean_val_bpb": round(means1[c], 6)} for i, c in enumerate(order1, 1)],
        "promoted_to_60min": gate4}, indent=2) + "\n"
    files["analysis/stage1_10min_seed42_seed43_top9_promotion_summary.csv"] = _csv_text(
        ["condition", "mean_val_bpb"], [[c, f"{means1[c]:.6f}"] for c in order1])
    wins2 = {c: sum(1 for h, s in cells2 if rank2[(c, h, s)] == 1) for c in gate4}
    files["analysis/stage2_60min_seed44_seed45_combined_decision.csv"] = _csv_text(
        ["condition", "rank", "mean_val_bpb", "first_places", "anchor"],
        [[c, i, f"{means2[c]:.6f}", wins2[c], "yes" if c in anchors else "no"] for i, c in enumerate(order2, 1)])
    files["analysis/stage2_60min_seed44_seed45_combined_decision.json"] = json.dumps({
        "anchors_for_12h": anchors, "bridge_first_in_all_cells": wins2["bridge"] == len(cells2)}, indent=2) + "\n"
    gap_g = round(means3["greedy"] - means3["bridge"], 6)
    gap_d = round(means3["d8_ar48"] - means3["bridge"], 6)
    bridge_wins = sum(1 for h, s in cells3 if rank3[("bridge", h, s)] == 1)
    files["analysis/stage3_12h_seed46_seed47_combined_decision.json"] = json.dumps({
        "winner": winner[0],
        "checks": {"greedy_near_equivalence": {"mean_gap": gap_g, "pass": abs(gap_g) <= 0.010},
                   "d8_ar48_mean_gap": {"mean_gap": gap_d, "pass": gap_d <= 0.020},
                   "bridge_first_all_cells": {"cells_won": bridge_wins, "pass": bridge_wins == len(cells3)}}},
        indent=2) + "\n"
    files["analysis/stage3_12h_seed46_seed47_combined_cells.csv"] = _csv_text(
        ["condition", "host", "seed", "val_bpb", "rank_in_cell"],
        [[c, HOSTS[h][0], s, f"{v12[(c, h, s)]:.6f}", rank3[(c, h, s)]] for c in anchors for h, s in cells3])
    std3 = {c: math.sqrt(sum((v12[(c, h, s)] - means3[c]) ** 2 for h, s in cells3) / (len(cells3) - 1))
            for c in anchors}
    files["analysis/stage3_12h_seed46_seed47_combined_summary.csv"] = _csv_text(
        ["condition", "rank", "mean", "std", "best", "worst"],
        [[c, i, f"{means3[c]:.6f}", f"{std3[c]:.6f}", f"{min(v12[(c, h, s)] for h, s in cells3):.6f}",
          f"{max(v12[(c, h, s)] for h, s in cells3):.6f}"] for i, c in enumerate(order3, 1)])

    # the authors' tables
    smoke = []
    for host in ("linux", "windows"):
        for c in sorted(KEEP):
            v = values["stage0"].get((c, host, 42))
            smoke.append([host, c, 42, "completed" if v is not None else "crashed", 200,
                          "" if v is None else f"{v:.6f}"])
    files["analysis/p06_stage0_smoke_summary_2026-05-02.csv"] = _csv_text(
        ["host", "condition", "seed", "exit_status", "num_steps", "final_val_bpb"], smoke)
    files["analysis/p06_stage0_smoke_summary_2026-05-02.json"] = json.dumps({"rows": smoke}) + "\n"
    files["analysis/p06_budget_counterfactual_2026-05-02.csv"] = _csv_text(
        ["item", "gate", "gpu_hours"],
        [["total", "", "169.2"], ["final_branch", "", "144.0"], ["gate_counterfactual", "stage1", "432.0"],
         ["gate_counterfactual", "stage2", "192.0"]])
    files["analysis/p06_budget_counterfactual_2026-05-02.json"] = json.dumps({"executed_12h": 144.0}) + "\n"
    host5 = []
    for host in ("linux", "windows"):
        m = {c: values["stage1_5min"][(c, host, 42)] for c in CONFIGS}
        for r, c in enumerate(sorted(CONFIGS, key=lambda c: (m[c], c)), 1):
            host5.append([c, host, f"{m[c]:.6f}", r])
    files["analysis/stage1_5min_host_comparison.csv"] = _csv_text(["condition", "host", "mean_val_bpb", "rank"], host5)
    files["analysis/stage1_5min_host_comparison.json"] = json.dumps({"rows": host5}) + "\n"
    for name in ("p06_promotion_survival_2026-05-02", "p06_threshold_sensitivity_2026-05-02"):
        files[f"analysis/{name}.csv"] = "condition,note\nbridge,see paper\n"
        files[f"analysis/{name}.json"] = json.dumps({"note": "see paper"}) + "\n"

    for name in ("analyze_p06_offline_readiness_checks", "analyze_stage3_12h_seed46_seed47", "analyze_stage_summary",
                 "apply_stage1_promotion_gate", "generate_paper06_figures", "materialize_p06_runs",
                 "parse_train_summary", "summarize_p06_runs", "verify_checkpoint"):
        files[f"control/{name}.py"] = f'"""{name} (the authors\' script)."""\n'
    files["control/README.txt"] = "The authors' control scripts.\n"
    for name in ("runner__train_p06_instrumented.py", "source__autoresearch-seed__prepare.py",
                 "source__autoresearch-seed__pyproject.toml", "source__autoresearch-seed__train.py"):
        files[f"source/{name}"] = f"# {name}\n"
    files["figure_manifest.json"] = json.dumps({"figures": []}) + "\n"
    files["table_manifest.json"] = json.dumps({"tables": [{"file": "analysis/p06_stage0_smoke_summary_2026-05-02.csv",
                                                           "script": "control/summarize_p06_runs.py"}]}) + "\n"
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text, encoding="utf-8", newline="\n")
    write_manifests(root)
    return root


def write_manifests(root: Path) -> None:
    """The authors' two manifests, over every file but themselves (the fixture's own writer)."""
    entries = []
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if p.is_file() and rel not in MANIFESTS:
            data = p.read_bytes()
            entries.append({"relative_path": rel, "size_bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()})
    (root / "MANIFEST.csv").write_text(_csv_text(["relative_path", "size_bytes", "sha256"],
                                                 [[e["relative_path"], e["size_bytes"], e["sha256"]] for e in entries]))
    (root / "MANIFEST.json").write_text(json.dumps({"generated": "2026-05-02", "files": entries}, indent=1) + "\n")


def sha256_of(root: Path, rel: str) -> str:
    return hashlib.sha256((root / rel).read_bytes()).hexdigest()
