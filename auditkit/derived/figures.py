"""Figures of a package (matplotlib, PNG) and `figure_manifest.json`.

Three kinds, each computed from the package's raw rows and recorded decisions:

- `rank_across_gates`: each candidate's overall rank at every gate; a ring marks
  the gate where it was eliminated;
- `val_bpb_vs_budget`: mean val_bpb against the stage budget, per candidate, and
  the data floor (`floor_bpb`) where the runner reports one in the rows;
- `host_scatter`: per stage run on two or more hosts, each candidate's mean
  val_bpb on one host against another; hosts labelled with their profile
  (`host_profiles` in protocol.json, else the "Host profiles:" block that
  `protocol run` writes into README.txt), candidates the gate reading the stage
  promoted filled, those it eliminated hollow.

Every candidate keeps one colour and marker in every figure; legends sit beside
the plot, never over points or labels (`auditkit.derived.figure_draw` draws them).

Images are not byte-stable across matplotlib versions, so a figure is checked
by regenerating it: the sha256 of the data it plots (`data_sha256`, canonical
JSON) must equal the recorded one, and the recorded PNG must be a PNG of the
same pixel size.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from collections import defaultdict
from pathlib import Path

from auditkit.errors import AuditError
from auditkit.derived.figure_draw import png_size, render, rendered_size
from auditkit.derived.output import Written, check_report, output_dir, write_outputs
from auditkit.package.canonical import canonical_json_bytes
from auditkit.errors import PackageDefect, defect
from auditkit.package.store import PackageStore, loads_strict, open_package
from auditkit.findings import Finding, Report
from auditkit.package.hashing import sha256_bytes
from auditkit.package.protocol import load_package_protocol
from auditkit.package.rows import RunRow, parse_run_csv_path

FIGURE_MANIFEST = "figure_manifest.json"


RUN_DIR = "remote-results"

# The version of each figure generator this auditkit runs (see `auditkit.derived.tables`): it goes up
# whenever the data a figure plots changes for the same inputs; figure_manifest.json records it, and
# `--check` compares a figure with what the version that drew it gives.  Older versions are
# projections of the current data.  A manifest without `generators` was written by the first ones.
GENERATOR_VERSIONS = {"rank_across_gates": 2,   # 2: the promoted list per gate (rings)
                      "val_bpb_vs_budget": 2,   # 2: the runner's data floor (floor_bpb)
                      "host_scatter": 2}        # 2: host profile labels, the gate and its promoted list
FIRST_GENERATORS = {k: 1 for k in GENERATOR_VERSIONS}


def _without(fig: dict, keys: tuple[str, ...], *, run_csvs_only: bool = False) -> dict:
    inputs = [i for i in fig["inputs"] if parse_run_csv_path(i) is not None] if run_csvs_only else fig["inputs"]
    return {**fig, "inputs": inputs, "data": {k: v for k, v in fig["data"].items() if k not in keys}}


_AS_OF = {
    ("rank_across_gates", 1): lambda f: _without(f, ("promoted",)),
    ("val_bpb_vs_budget", 1): lambda f: _without(f, ("floor_bpb",)),
    ("host_scatter", 1): lambda f: _without(f, ("host_labels", "gate", "promoted"), run_csvs_only=True),
}


def figure_as_of(fig: dict, version) -> dict | None:
    """`fig` (from `figure_data`) as version `version` of its generator makes it; None for a
    version this auditkit does not know."""
    current = GENERATOR_VERSIONS.get(fig["kind"])
    if current is None or not isinstance(version, int) or isinstance(version, bool):
        return None
    if version == current:
        return fig
    step = _AS_OF.get((fig["kind"], version))
    return step(fig) if step else None


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
    names = [name for name, _ in store.listdir(RUN_DIR)]
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
    from auditkit.gates.documents import read_json, validate_decision

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
    promoted: dict[str, list[str]] = {}
    dec_inputs = []
    for g in proto.gates:
        if store.kind(g.decision_path) is None:
            continue
        dec_inputs.append(g.decision_path)
        doc = _decision(store, g.decision_path)
        promoted[g.gate] = list(doc.get("promoted", []))
        for c in doc["candidates"]:
            ranks[c["config_id"]][g.gate] = c.get("rank")
    if dec_inputs:
        figs.append({"id": "rank_across_gates", "kind": "rank_across_gates", "path": "figures/rank_across_gates.png",
                     "inputs": dec_inputs,
                     "data": {"gates": [g.gate for g in proto.gates if g.decision_path in dec_inputs],
                              "ranks": {k: ranks[k] for k in sorted(ranks)}, "promoted": promoted}})
    gate_of_stage = {}
    for g in proto.gates:   # the first gate that reads a stage decides its candidates' fate there
        if g.gate in promoted and store.kind(g.rules) == "file":
            rules = store.read_json(g.rules)
            for st in (rules.get("inputs", {}).get("stages", []) if isinstance(rules, dict) else []):
                gate_of_stage.setdefault(st, g.gate)
    labels, labels_from = _host_labels(store, proto.hosts)

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
    budget_data = {"series": {k: series[k] for k in sorted(series)}}
    floors = sorted({round(f, 9) for f in (r.metric("floor_bpb") for r in rows) if f is not None and math.isfinite(f)})
    if floors:
        budget_data["floor_bpb"] = floors
    figs.append({"id": "val_bpb_vs_budget", "kind": "val_bpb_vs_budget", "path": "figures/val_bpb_vs_budget.png",
                 "inputs": csvs, "data": budget_data})

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
            data = {"stage": s.stage, "hosts": [a, b], "points": pts,
                    "host_labels": [labels.get(a, a), labels.get(b, b)]}
            gate = gate_of_stage.get(s.stage)
            if gate is not None:
                data["gate"], data["promoted"] = gate, promoted[gate]
            figs.append({"id": f"host_scatter_{s.stage}", "kind": "host_scatter",
                         "path": f"figures/host_scatter_{s.stage}.png",
                         "inputs": [c for c in csvs if parse_run_csv_path(c)[1] == s.stage]
                         + ([labels_from] if labels_from else []),
                         "data": data})
    return figs


def host_labels(pkg, hosts) -> dict[str, str]:
    """'windows (2 threads)' per host, from protocol.json's optional `host_profiles`, else from the
    'Host profiles:' block `protocol run` writes into README.txt; the bare name where neither says."""
    return _host_labels(_store(pkg), hosts)[0]


def _host_labels(store: PackageStore, hosts) -> tuple[dict[str, str], str | None]:
    """(labels, the package file they come from or None)."""
    profiles: dict = {}
    source = None
    try:
        profiles = store.read_json("protocol.json").get("host_profiles") or {}
        source = "protocol.json" if profiles else None
    except (AuditError, AttributeError):
        profiles = {}
    if not profiles and store.kind("README.txt") == "file":
        try:
            lines = store.read_text("README.txt").splitlines()
        except AuditError:
            lines = []
        if "Host profiles:" in lines:
            for line in lines[lines.index("Host profiles:") + 1:]:
                m = re.match(r"^  ([a-z0-9-]+): (\{.*\})$", line)
                if not m:
                    break
                try:
                    profiles[m[1]] = loads_strict(m[2], "README.txt")
                except AuditError:
                    break
            source = "README.txt" if profiles else None
    labels = {h: f"{h} ({_profile_text(profiles[h])})" if isinstance(profiles.get(h), dict) and profiles[h] else h
              for h in hosts}
    return labels, (source if labels != {h: h for h in hosts} else None)


def _profile_text(profile: dict) -> str:
    parts = []
    threads = profile.get("threads")
    if threads is not None:
        parts.append(f"{threads} thread{'' if threads == 1 else 's'}")
    device = profile.get("device")
    if device and not (device == "cpu" and threads is not None):
        parts.append(str(device))
    parts += [str(v) for k, v in sorted(profile.items()) if k not in ("threads", "device")]
    return ", ".join(parts)


def data_sha256(data: dict) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, separators=(",", ":")).encode()).hexdigest()



def figure_files(pkg: str | Path, *, as_recorded: bool = True) -> tuple[list[dict], dict[str, bytes]]:
    """Every figure (PNG) and `figure_manifest.json`, in memory: (manifest entries, {path: bytes}).
    `as_recorded`: a package that lists its figures gets the data of the generator versions that
    drew them, in the manifest form it has (see `auditkit.derived.tables.table_files`); otherwise
    the current generators, each version recorded."""
    store = _store(pkg)
    figs = figure_data(store)
    plan = _recorded_versions(store, figs) if as_recorded else None
    versions, versioned = (dict(GENERATOR_VERSIONS), True) if plan is None else plan
    figs = [figure_as_of(f, versions[f["kind"]]) for f in figs if f["kind"] in versions]
    if any(f is None for f in figs):     # a version this auditkit cannot make: the current ones
        figs, versions, versioned = figure_data(store), dict(GENERATOR_VERSIONS), True
    entries, files = [], {}
    for fig in figs:
        png = render(fig)
        files[fig["path"]] = png
        e = {"id": fig["id"], "path": fig["path"], "kind": fig["kind"], "inputs": fig["inputs"],
             "sha256": sha256_bytes(png), "data_sha256": data_sha256(fig["data"])}
        if versioned:
            e["generator"] = versions[fig["kind"]]
        entries.append(e)
    doc = {"schema": "auditkit/figures/v1", "figures": entries}
    if versioned:
        doc["generators"] = versions
    files[FIGURE_MANIFEST] = canonical_json_bytes(doc)
    return entries, files


def _recorded_versions(store: PackageStore, figs: list[dict]) -> tuple[dict, bool] | None:
    """({kind: version}, versioned) of the package's own figure_manifest.json, or None."""
    from auditkit.derived.versions import known_versions, pick_version, valid_manifest

    doc = valid_manifest(store, FIGURE_MANIFEST, "figure-manifest")
    if doc is None:
        return None
    gens = doc.get("generators")
    out = dict(gens) if gens is not None else {}
    by_id = {f["id"]: f for f in figs}
    for e in doc["figures"]:
        f = by_id.get(e["id"])
        if f is None or f["kind"] in out:
            continue
        out[f["kind"]] = pick_version(e, f["kind"], gens, known_versions(f["kind"], GENERATOR_VERSIONS, _AS_OF),
                                      lambda v: data_sha256(figure_as_of(f, v)["data"]) == e.get("data_sha256"))
    if gens is None:
        out.update({k: v for k, v in FIRST_GENERATORS.items() if k not in out})
    return out, gens is not None


def generate_figures(pkg: str | Path, out: str | Path | None = None, *, in_place: bool = False,
                     force: bool = False) -> Written:
    """Render every figure and write them and figure_manifest.json into `out`, or into the
    package itself only with `in_place` (see `auditkit.derived.output`). Returns the manifest
    entries (`.changed`: the files whose bytes changed); a file of another content already there is
    replaced only with `force` (`in_place` says it). Raises AuditError."""
    dest = output_dir(pkg, out, in_place=in_place, what="figures")
    entries, files = figure_files(pkg)
    return Written(entries, dest, write_outputs(dest, files, force=force or in_place, what="figures"))


def check_figures(pkg) -> Report:
    """Regenerate every listed figure's data and compare it with the recorded manifest and PNG."""
    return check_report(pkg, "figures --check", _check_figures)


def _check_figures(store: PackageStore, report: Report) -> None:
    if store.kind(FIGURE_MANIFEST) is None:
        report.add(Finding(FIGURE_MANIFEST, "figure-manifest-missing", expected="a figure manifest", found="no such file",
                           message="the package lists no figures, so none can be checked against its raw rows"))
        return
    from auditkit.gates.documents import read_json
    from auditkit.package.schemas import validate_document

    doc = read_json(store, FIGURE_MANIFEST)
    bad = validate_document(doc, "figure-manifest", FIGURE_MANIFEST)
    if bad:
        report.extend(bad)
        return
    from auditkit.derived.versions import known_versions, pick_version

    recorded = {e["id"]: e for e in doc["figures"]}
    fresh = {f["id"]: f for f in figure_data(store)}
    gens = doc.get("generators")    # validated: {kind: version} or absent
    had = set(gens) if gens is not None else set(FIRST_GENERATORS)
    newer = []
    for fid in sorted(set(recorded) | set(fresh)):
        rec, new = recorded.get(fid), fresh.get(fid)
        if rec is None:
            if new["kind"] in had:
                report.add(Finding(FIGURE_MANIFEST, "figure-unlisted", found=fid,
                                   message="the package's data gives a figure the manifest does not list"))
            else:
                newer.append(fid)
            continue
        if new is None:
            report.add(Finding(FIGURE_MANIFEST, "figure-not-derivable", found=fid,
                               message="the manifest lists a figure the package's data does not give"))
            continue
        versions = known_versions(new["kind"], GENERATOR_VERSIONS, _AS_OF)
        version = pick_version(rec, new["kind"], gens, versions,
                               lambda v: data_sha256(figure_as_of(new, v)["data"]) == rec.get("data_sha256"))
        new = figure_as_of(new, version)
        if new is None:
            report.add(Finding(FIGURE_MANIFEST, "figure-generator-unknown", expected=(
                f"a version of the {rec['kind']} generator this auditkit has ({', '.join(map(str, versions))})"),
                found=repr(version), message=f"{fid}: drawn by a generator this auditkit cannot rerun; check it "
                                             "with the auditkit that drew it (or a newer one)"))
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
        size = rendered_size()     # what png_size(render(new)) gives, without drawing it
        if png_size(data) != size:
            report.add(Finding(rec["path"], "figure-size-differs", expected=str(size), found=str(png_size(data)),
                               message="the image is not of the size regenerating it gives"))
    if newer:   # the auditkit that drew the package had no generator for these: nothing is missing
        report.info["figures a newer auditkit adds (not checked)"] = ", ".join(newer)
    report.checked["figures"] = len(recorded)
