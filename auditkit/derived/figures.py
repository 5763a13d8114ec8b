"""Figures of a package (matplotlib, PNG) and `figure_manifest.json`.

Three kinds, each computed from the package's raw rows and recorded decisions:

- `rank_across_gates`: each candidate's overall rank at every gate;
- `val_bpb_vs_budget`: mean val_bpb against the stage budget, per candidate;
- `host_scatter`: per stage run on two or more hosts, each candidate's mean
  val_bpb on one host against another.

Images are not byte-stable across matplotlib versions, so a figure is checked
by regenerating it: the sha256 of the data it plots (`data_sha256`, canonical
JSON) must equal the recorded one, and the recorded PNG must be a PNG of the
same pixel size.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import struct
from collections import defaultdict
from pathlib import Path

from auditkit.errors import AuditError
from auditkit.package.store import (PackageDefect, PackageStore, atomic_write_bytes, canonical_json_bytes, defect,
                                    open_package)
from auditkit.findings import Finding, Report
from auditkit.package.hashing import sha256_bytes
from auditkit.study.spec import load_package_protocol
from auditkit.package.rows import RunRow, parse_run_csv_path

FIGURE_MANIFEST = "figure_manifest.json"
DPI = 100
SIZE = (7.0, 4.5)


RUN_DIR = "remote-results"


def _store(pkg) -> PackageStore:
    return pkg if isinstance(pkg, PackageStore) else open_package(pkg)


def _run_csvs(store: PackageStore) -> list[str]:
    """The package's run CSVs (``remote-results/<host>_<stage>_summary.csv``), sorted; a
    `remote-results` that is a link or a file is a PackageDefect (never followed)."""
    kind = store.kind(RUN_DIR)
    if kind is None:
        return []
    if kind != "dir":
        if os.path.islink(store.root / RUN_DIR):
            raise defect(RUN_DIR, "symlink", f"{RUN_DIR} is a symbolic link: auditkit never follows one",
                         expected="a directory", found="a symbolic link",
                         hint="a package holds regular files; a link could point anywhere")
        raise defect(RUN_DIR, "not-regular-file", f"{RUN_DIR} is not a directory", expected="a directory",
                     found="something else", hint="a package holds its run CSVs in a plain directory")
    names = sorted(e.name for e in os.scandir(store.root / RUN_DIR))
    return [f"{RUN_DIR}/{n}" for n in names if n.endswith(".csv") and parse_run_csv_path(f"{RUN_DIR}/{n}") is not None]


def _rows(store: PackageStore, csvs: list[str]) -> list[RunRow]:
    out = []
    for rel in csvs:
        for i, r in enumerate(store.read_csv(rel)[1], start=1):
            try:
                out.append(RunRow.from_strings(r))
            except ValueError as exc:
                raise defect(rel, "row-invalid", f"a value does not parse: {exc}", location=f"row {i}",
                             hint="SPEC.md section 4 says what each column holds") from None
    return out


def _decision(store: PackageStore, rel: str) -> dict:
    from auditkit.gates.replay import read_json, validate_decision

    doc = read_json(store, rel)
    bad = validate_decision(doc, rel)
    if bad:
        raise PackageDefect(bad[0])
    return doc


def figure_data(pkg) -> list[dict]:
    """Every figure's id, path, kind, inputs and the data it plots (JSON-ready, deterministic).
    Reads through the package's store; PackageDefect for a defective file."""
    store = _store(pkg)
    proto = load_package_protocol(store)
    csvs = _run_csvs(store)
    rows = _rows(store, csvs)
    figs = []

    ranks: dict[str, dict[str, int | None]] = defaultdict(dict)
    dec_inputs = []
    for g in proto.gates:
        if store.kind(g.decision_path) is None:
            continue
        dec_inputs.append(g.decision_path)
        for c in _decision(store, g.decision_path)["candidates"]:
            ranks[c["config_id"]][g.gate] = c.get("rank")
    if dec_inputs:
        figs.append({"id": "rank_across_gates", "kind": "rank_across_gates", "path": "figures/rank_across_gates.png",
                     "inputs": dec_inputs,
                     "data": {"gates": [g.gate for g in proto.gates if g.decision_path in dec_inputs],
                              "ranks": {k: ranks[k] for k in sorted(ranks)}}})

    by_stage_cfg: dict[tuple[str, str], list[float]] = defaultdict(list)
    by_stage_host_cfg: dict[tuple[str, str, str], list[float]] = defaultdict(list)
    for r in rows:
        if r.status == "ok" and r.val_bpb is not None:
            by_stage_cfg[(r.stage, r.config_id)].append(r.val_bpb)
            by_stage_host_cfg[(r.stage, r.host, r.config_id)].append(r.val_bpb)
    series: dict[str, list[list]] = defaultdict(list)
    for s in proto.stages:
        for (stage, cid), vals in sorted(by_stage_cfg.items()):
            if stage == s.stage:
                series[cid].append([s.stage, s.budget.kind, s.budget.value, round(sum(vals) / len(vals), 9)])
    figs.append({"id": "val_bpb_vs_budget", "kind": "val_bpb_vs_budget", "path": "figures/val_bpb_vs_budget.png",
                 "inputs": csvs, "data": {"series": {k: series[k] for k in sorted(series)}}})

    for s in proto.stages:
        if len(s.hosts) < 2:
            continue
        a, b = s.hosts[0], s.hosts[1]
        pts = []
        for (stage, host, cid), vals in sorted(by_stage_host_cfg.items()):
            if stage == s.stage and host == a and (stage, b, cid) in by_stage_host_cfg:
                vb = by_stage_host_cfg[(stage, b, cid)]
                pts.append([cid, round(sum(vals) / len(vals), 9), round(sum(vb) / len(vb), 9)])
        if pts:
            figs.append({"id": f"host_scatter_{s.stage}", "kind": "host_scatter",
                         "path": f"figures/host_scatter_{s.stage}.png",
                         "inputs": [c for c in csvs if parse_run_csv_path(c)[1] == s.stage],
                         "data": {"stage": s.stage, "hosts": [a, b], "points": pts}})
    return figs


def data_sha256(data: dict) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


_MARKERS = "os^Dv<>pPX*h"


def _candidates(fig: dict) -> list[str]:
    d = fig["data"]
    if fig["kind"] == "rank_across_gates":
        return sorted(d["ranks"])
    if fig["kind"] == "val_bpb_vs_budget":
        return sorted(d["series"])
    return sorted(p[0] for p in d.get("points", []))


def _styles(candidates: list[str]) -> dict[str, dict]:
    """A colour and a marker per candidate: twenty colours, and markers that change every twenty,
    so no two candidates of a figure look alike (tab10 repeats after ten)."""
    from matplotlib import colormaps

    cmap = colormaps["tab20"]
    return {cid: {"color": cmap(i % 20), "marker": _MARKERS[(i // 20 + i) % len(_MARKERS)], "markersize": 5}
            for i, cid in enumerate(candidates)}


def render(fig: dict) -> bytes:
    """PNG bytes of one figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams["svg.hashsalt"] = "auditkit"
    f, ax = plt.subplots(figsize=SIZE, dpi=DPI)
    d = fig["data"]
    styles = _styles(_candidates(fig))
    if fig["kind"] == "rank_across_gates":
        gates = d["gates"]
        for cid, by_gate in d["ranks"].items():
            xs = [i for i, g in enumerate(gates) if by_gate.get(g) is not None]
            ax.plot(xs, [by_gate[gates[i]] for i in xs], label=cid, **styles[cid])
        ax.set_xticks(range(len(gates)), gates)
        ax.invert_yaxis()
        ax.set_ylabel("overall rank at gate (1 = best)")
        ax.set_title("Rank of each candidate across gates")
    elif fig["kind"] == "val_bpb_vs_budget":
        budgets = sorted({p[2] for pts in d["series"].values() for p in pts})
        kinds = sorted({p[1] for pts in d["series"].values() for p in pts})
        for cid, pts in d["series"].items():
            ax.plot([p[2] for p in pts], [p[3] for p in pts], label=cid, **styles[cid])
        ax.set_xscale("log")
        ax.set_xticks(budgets, [f"{b:g}" for b in budgets])   # the stages' budgets, not powers of ten
        ax.minorticks_off()
        ax.set_xlabel("stage budget (" + " / ".join(kinds) + ", log scale)")
        ax.set_ylabel("mean val_bpb (lower is better)")
        ax.set_title("val_bpb against budget")
    elif fig["kind"] == "host_scatter":
        xs = [p[1] for p in d["points"]]
        ys = [p[2] for p in d["points"]]
        for cid, x, y in d["points"]:
            st = styles[cid]
            ax.scatter([x], [y], color=st["color"], marker=st["marker"], zorder=3, label=cid)
        lo, hi = min(xs + ys), max(xs + ys)
        ax.plot([lo, hi], [lo, hi], linestyle="--", linewidth=0.8, color="0.5", label="equal on both hosts")
        ax.set_xlabel(f"{d['hosts'][0]} mean val_bpb")
        ax.set_ylabel(f"{d['hosts'][1]} mean val_bpb")
        ax.set_title(f"Host against host, {d['stage']}")
    else:
        raise AuditError(f"unknown figure kind {fig['kind']!r}")
    n = len(ax.get_legend_handles_labels()[1])
    ax.legend(fontsize=7, ncol=1 if n <= 16 else 2, frameon=False, loc="center left", bbox_to_anchor=(1.01, 0.5))
    ax.grid(True, linewidth=0.3, alpha=0.5)
    f.tight_layout()
    buf = io.BytesIO()
    f.savefig(buf, format="png", metadata={"Software": None})
    plt.close(f)
    return buf.getvalue()


def png_size(data: bytes) -> tuple[int, int] | None:
    if len(data) < 24 or data[:8] != b"\x89PNG\r\n\x1a\n" or data[12:16] != b"IHDR":
        return None
    return struct.unpack(">II", data[16:24])


def generate_figures(pkg: str | Path, out: str | Path | None = None) -> list[dict]:
    """Render every figure into `out` (default: the package) and write figure_manifest.json there."""
    pkg = Path(pkg)
    out = Path(out) if out else pkg
    entries = []
    for fig in figure_data(pkg):
        png = render(fig)
        atomic_write_bytes(out / fig["path"], png)
        entries.append({"id": fig["id"], "path": fig["path"], "kind": fig["kind"], "inputs": fig["inputs"],
                        "sha256": sha256_bytes(png), "data_sha256": data_sha256(fig["data"])})
    doc = {"schema": "auditkit/figures/v1", "figures": entries}
    atomic_write_bytes(out / FIGURE_MANIFEST, canonical_json_bytes(doc))
    return entries


def check_figures(pkg) -> Report:
    """Regenerate every listed figure's data and compare it with the recorded manifest and PNG.
    A defective package file is a finding; AuditError only when `pkg` is no package."""
    store = open_package(pkg)
    report = Report("figures --check", str(pkg))
    try:
        _check_figures(store, report)
    except PackageDefect as exc:
        report.add(exc.finding)
    return report


def _check_figures(store: PackageStore, report: Report) -> None:
    if store.kind(FIGURE_MANIFEST) is None:
        report.add(Finding(FIGURE_MANIFEST, "figure-manifest-missing", expected="a figure manifest", found="no such file",
                           message="the package lists no figures, so none can be checked against its raw rows"))
        return
    from auditkit.gates.replay import read_json
    from auditkit.package.schemas import validate_document

    doc = read_json(store, FIGURE_MANIFEST)
    bad = validate_document(doc, "figure-manifest", FIGURE_MANIFEST)
    if bad:
        report.extend(bad)
        return
    recorded = {e["id"]: e for e in doc["figures"]}
    fresh = {f["id"]: f for f in figure_data(store)}
    for fid in sorted(set(recorded) | set(fresh)):
        rec, new = recorded.get(fid), fresh.get(fid)
        if rec is None:
            report.add(Finding(FIGURE_MANIFEST, "figure-unlisted", found=fid,
                               message="the package's data gives a figure the manifest does not list"))
            continue
        if new is None:
            report.add(Finding(FIGURE_MANIFEST, "figure-not-derivable", found=fid,
                               message="the manifest lists a figure the package's data does not give"))
            continue
        if data_sha256(new["data"]) != rec.get("data_sha256"):
            report.add(Finding(rec["path"], "figure-data-differs", expected=rec.get("data_sha256", ""),
                               found=data_sha256(new["data"]),
                               message="the data the package's rows give for this figure differs from what was drawn"))
        if store.kind(rec["path"]) is None:
            report.add(Finding(rec["path"], "figure-missing", expected="the listed figure file", found="no such file",
                               message="the manifest lists a figure the package does not hold"))
            continue
        try:
            data = store.read_bytes(rec["path"])
        except PackageDefect as exc:
            report.add(exc.finding)
            continue
        if sha256_bytes(data) != rec.get("sha256"):
            report.add(Finding(rec["path"], "figure-changed", expected=rec.get("sha256", ""), found=sha256_bytes(data),
                               message="the image is not the one the manifest recorded"))
        size = png_size(render(new))
        if png_size(data) != size:
            report.add(Finding(rec["path"], "figure-size-differs", expected=str(size), found=str(png_size(data)),
                               message="the image is not of the size regenerating it gives"))
    report.checked["figures"] = len(recorded)
