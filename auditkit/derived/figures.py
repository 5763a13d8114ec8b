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
import struct
from collections import defaultdict
from pathlib import Path

from auditkit.errors import AuditError
from auditkit.package.store import atomic_write_bytes, canonical_json_bytes, open_package
from auditkit.findings import Finding, Report
from auditkit.package.hashing import sha256_bytes
from auditkit.study.spec import load_protocol
from auditkit.package.rows import RunRow, parse_run_csv_path, read_csv_text

FIGURE_MANIFEST = "figure_manifest.json"
DPI = 100
SIZE = (7.0, 4.5)


def _rows(pkg: Path) -> list[RunRow]:
    out = []
    for p in sorted((pkg / "remote-results").glob("*.csv")):
        rel = p.relative_to(pkg).as_posix()
        if parse_run_csv_path(rel) is None:
            continue
        out += [RunRow.from_strings(r) for r in read_csv_text(p.read_text("utf-8"), rel)[1]]
    return out


def figure_data(pkg: Path) -> list[dict]:
    """Every figure's id, path, kind, inputs and the data it plots (JSON-ready, deterministic)."""
    open_package(pkg)
    proto = load_protocol(pkg / "protocol.json")
    rows = _rows(pkg)
    csvs = sorted(p.relative_to(pkg).as_posix() for p in (pkg / "remote-results").glob("*.csv"))
    figs = []

    ranks: dict[str, dict[str, int | None]] = defaultdict(dict)
    dec_inputs = []
    for g in proto.gates:
        path = pkg / g.decision_path
        if not path.exists():
            continue
        dec_inputs.append(g.decision_path)
        for c in json.loads(path.read_text("utf-8"))["candidates"]:
            ranks[c["config_id"]][g.gate] = c.get("rank")
    if dec_inputs:
        figs.append({"id": "rank_across_gates", "kind": "rank_across_gates", "path": "figures/rank_across_gates.png",
                     "inputs": dec_inputs,
                     "data": {"gates": [g.gate for g in proto.gates if (pkg / g.decision_path).exists()],
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


def check_figures(pkg: str | Path) -> Report:
    """Regenerate every listed figure's data and compare it with the recorded manifest and PNG."""
    pkg = Path(pkg)
    open_package(pkg)
    report = Report("figures --check", str(pkg))
    mpath = pkg / FIGURE_MANIFEST
    if not mpath.exists():
        report.add(Finding(FIGURE_MANIFEST, "figure-manifest-missing",
                           message="no figure manifest is recorded, so the figures cannot be checked against their data"))
        return report
    try:
        recorded = {e["id"]: e for e in json.loads(mpath.read_text("utf-8"))["figures"]}
    except (ValueError, KeyError, TypeError) as exc:
        raise AuditError(f"figure manifest is not readable: {exc}", path=str(mpath)) from exc
    fresh = {f["id"]: f for f in figure_data(pkg)}
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
                               message="the plotted data regenerated from the package differs from what was drawn"))
        png_path = pkg / rec["path"]
        if not png_path.is_file():
            report.add(Finding(rec["path"], "figure-missing", message="the recorded figure file is absent"))
            continue
        data = png_path.read_bytes()
        if sha256_bytes(data) != rec.get("sha256"):
            report.add(Finding(rec["path"], "figure-changed", expected=rec.get("sha256", ""), found=sha256_bytes(data)))
        if png_size(data) != png_size(render(new)):
            report.add(Finding(rec["path"], "figure-size-differs", expected=str(png_size(render(new))),
                               found=str(png_size(data))))
    report.checked["figures"] = len(recorded)
    return report
